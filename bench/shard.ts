// Shard-job throughput, end to end (source files -> finished shards on disk), per worker count:
//   jpeg-photo: ~500x375 JPEG photos -> 64x64 raw shards (bounded by decode + resize)
//   idx:        28x28 idx images -> raw shards (bounded by I/O and the main thread)
//   cifar:      32x32 CIFAR-10 binary -> raw shards
// Inputs are generated under a temp folder (no download).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { runShardJob } from '../src/pipeline/shard/shard-job.ts';
import { openSource } from '../src/pipeline/sources/open-source.ts';
import { Rng } from '../src/shared/random.ts';
import { makePhotos } from './synthetic-photos.ts';

const { values: v } = parseArgs({
  options: {
    cases: { type: 'string', default: 'jpeg-photo,idx,cifar' },
    workers: { type: 'string' },
    photos: { type: 'string', default: '600' },
    'idx-count': { type: 'string', default: '60000' },
    'cifar-count': { type: 'string', default: '50000' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (v.help) {
  process.stdout.write('npm run bench -- shard [--cases jpeg-photo,idx,cifar] [--workers 1,2] [--photos 600] [--idx-count 60000] [--cifar-count 50000]\n');
  process.exit(0);
}
const cores = availableParallelism();
const workerCounts = (v.workers ?? [...new Set([1, cores])].join(',')).split(',').map(Number);
const tmp = mkdtempSync(join(tmpdir(), 'bench-shard-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

function idxFile(dims: number[], data: Uint8Array): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 8;
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  return Buffer.concat([header, data]);
}

function randomBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  const rng = new Rng(seed);
  for (let i = 0; i < n; i += 4) {
    const u = rng.nextUint32();
    out[i] = u;
    out[i + 1] = u >>> 8;
    out[i + 2] = u >>> 16;
    out[i + 3] = u >>> 24;
  }
  return out;
}

async function prepare(kind: string): Promise<{ source: string; paths: string[]; count: number; detail: string }> {
  const dir = join(tmp, kind);
  mkdirSync(dir, { recursive: true });
  if (kind === 'jpeg-photo') {
    const n = Number(v.photos);
    await makePhotos(dir, n);
    return { source: 'imagefolder', paths: [dir], count: n, detail: '500x375 JPEG q90 -> max-side 64 raw' };
  }
  if (kind === 'idx') {
    const n = Number(v['idx-count']);
    writeFileSync(join(dir, 'images'), idxFile([n, 28, 28], randomBytes(n * 784, 1)));
    writeFileSync(
      join(dir, 'labels'),
      idxFile(
        [n],
        Uint8Array.from({ length: n }, (_, i) => i % 10),
      ),
    );
    return { source: 'idx', paths: [join(dir, 'images'), join(dir, 'labels')], count: n, detail: '28x28x1 idx -> raw npy' };
  }
  if (kind === 'cifar') {
    const n = Number(v['cifar-count']);
    const per = n / 5;
    const folder = join(dir, 'cifar-10-batches-bin');
    mkdirSync(folder, { recursive: true });
    for (let b = 1; b <= 5; b++) {
      const recs = randomBytes(per * 3073, b);
      for (let i = 0; i < per; i++) recs[i * 3073] = i % 10;
      writeFileSync(join(folder, `data_batch_${b}.bin`), recs);
    }
    return { source: 'cifar10', paths: [dir], count: n, detail: '32x32x3 CIFAR-10 binary -> raw npy' };
  }
  throw new Error(`unknown case ${kind}`);
}

for (const kind of v.cases!.split(',')) {
  process.stderr.write(`preparing ${kind} ...\n`);
  const input = await prepare(kind);
  for (const workers of workerCounts) {
    const out = join(tmp, `${kind}-out-${workers}`);
    const source = await openSource({ kind: input.source, paths: input.paths, split: 'train', seed: 0, res: 64 });
    const t0 = performance.now();
    const summary = await runShardJob(source, {
      out,
      res: 64,
      resize: 'max-side',
      encoding: 'raw',
      quality: 90,
      samplesPerShard: 5000,
      workers,
      seed: 0,
      split: 'train',
      valFraction: 0,
      command: 'bench',
    });
    const seconds = (performance.now() - t0) / 1000;
    const images = summary.splits.reduce((a, s) => a + s.samples, 0);
    const rate = images / seconds;
    process.stdout.write(
      `${JSON.stringify({
        bench: 'shard',
        case: kind,
        detail: input.detail,
        workers,
        cores,
        images,
        seconds: Number(seconds.toFixed(3)),
        images_per_sec: Math.round(rate),
        images_per_sec_per_worker: Math.round(rate / workers),
        mb_per_sec: Number((summary.splits.reduce((a, s) => a + s.bytes, 0) / 1e6 / seconds).toFixed(1)),
      })}\n`,
    );
    rmSync(out, { recursive: true, force: true });
  }
}
