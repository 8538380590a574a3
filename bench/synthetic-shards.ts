// The loader benchmarks' input: seeded synthetic 64x64 images in 100 classes, sharded as the
// shard job writes them (raw .npy or JPEG q90, 5,000 a shard), so every loader bench reads the
// same data for a given count and encoding.
import { join } from 'node:path';
import { runShardJob } from '../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../src/pipeline/sources/synthetic.ts';

/** Shards `count` images into `out`; returns the path of their index.json. */
export async function syntheticShards(out: string, count: number, encoding: 'raw' | 'jpeg'): Promise<string> {
  process.stderr.write(`generating ${count} synthetic 64x64 images as ${encoding} shards ...\n`);
  await runShardJob(openSynthetic({ count, numClasses: 100, width: 64, height: 64, seed: 0 }), {
    out,
    res: 64,
    resize: 'max-side',
    encoding,
    quality: 90,
    samplesPerShard: 5000,
    seed: 0,
    split: 'train',
    valFraction: 0,
    command: 'bench',
  });
  return join(out, 'index.json');
}
