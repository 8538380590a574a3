// npm run loader -- dump ...: writes the first K batch frames of epoch 0 back to back into one
// file, exactly as they sit in the ring (each a complete msgpack document).
import { rmSync } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Loader } from '../pipeline/loader/loader.ts';

const HELP = `Usage: npm run loader -- dump --data <index.json|dir|shard urls> --batches K --out <file> [options]

Writes the first K batch frames of epoch 0 back to back into <file>: the exact msgpack
documents the trainer reads from the ring (see "Batch frames" in the README). Any msgpack
library can read them: e.g. Python's msgpack.Unpacker over the file.

Options:
  --data <spec>         dataset: index.json, a folder with one, or shard paths/URLs
  --batches <K>         frames to write (default 1)
  --out <file>          output file (written as <file>.tmp, then renamed)
  --eval                eval mode (sequential, centre crop) instead of train (shuffled, augmented)
  --batch-size <N>      rows per batch (default 1024)
  --seed <S>            plan and augmentation seed (default 0)
  --epoch <E>           epoch to dump (default 0)
  --res <n>             output resolution (default: the dataset's)
  --workers <n>         loader threads (default: all cores, ${availableParallelism()} here)
  --normalize dataset|imagenet|none   per-channel statistics (default dataset)
  --frame-dtype float32|uint8         float32 (default): normalised values; uint8: the rounded
                        pixels, with the statistics as the frame's "mean"/"std" to apply
  -h, --help            this text`;

async function dump(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      data: { type: 'string' },
      batches: { type: 'string', default: '1' },
      out: { type: 'string' },
      eval: { type: 'boolean' },
      'batch-size': { type: 'string', default: '1024' },
      seed: { type: 'string', default: '0' },
      epoch: { type: 'string', default: '0' },
      res: { type: 'string' },
      workers: { type: 'string' },
      normalize: { type: 'string', default: 'dataset' },
      'frame-dtype': { type: 'string', default: 'float32' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  if (!v.data || !v.out) throw new UsageError('dump needs --data and --out');
  const int = (name: string, s: string): number => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a non-negative integer, got "${s}"`);
    return n;
  };
  const normalize = v.normalize as string;
  if (!['dataset', 'imagenet', 'none'].includes(normalize)) throw new UsageError(`--normalize must be dataset, imagenet or none, got "${normalize}"`);
  const frameDtype = v['frame-dtype'] as string;
  if (frameDtype !== 'float32' && frameDtype !== 'uint8') throw new UsageError(`--frame-dtype must be float32 or uint8, got "${frameDtype}"`);
  const batches = int('batches', v.batches!);
  const loader = await Loader.open({
    data: v.data,
    batchSize: int('batch-size', v['batch-size']!),
    mode: v.eval ? 'eval' : 'train',
    seed: int('seed', v.seed!),
    ...(v.res ? { res: int('res', v.res) } : {}),
    ...(v.workers ? { workers: int('workers', v.workers) } : {}),
    normalize: normalize as 'dataset' | 'imagenet' | 'none',
    frameDtype,
  });
  process.stderr.write(`${loader.describe()}\n`);
  const tmp = `${v.out}.tmp`;
  pendingTmp = tmp;
  const file = await open(tmp, 'w');
  let written = 0;
  let bytes = 0;
  try {
    for await (const b of loader.epoch(int('epoch', v.epoch!))) {
      if (written >= batches) {
        b.release();
        break;
      }
      await file.write(b.frame);
      bytes += b.frame.length;
      b.release();
      written++;
    }
    await file.close();
    await rename(tmp, v.out);
    pendingTmp = null;
  } catch (err) {
    await file.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  } finally {
    await loader.close();
  }
  if (loader.corruptCount) process.stderr.write(`${loader.corruptCount} corrupt samples replaced\n`);
  process.stderr.write(`wrote ${written} frames (${(bytes / 2 ** 20).toFixed(1)} MiB) to ${v.out}\n`);
  process.stdout.write(`${JSON.stringify({ out: v.out, frames: written, bytes })}\n`);
  return 0;
}

class UsageError extends Error {}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === 'dump') return dump(rest);
  process.stdout.write(`${HELP}\n`);
  return command === undefined || command === '--help' || command === '-h' ? 0 : 2;
}

/** A half-written dump is removed on Ctrl-C; exiting ends the worker threads with the process. */
let pendingTmp: string | null = null;
process.on('SIGINT', () => {
  if (pendingTmp) rmSync(pendingTmp, { force: true });
  process.stderr.write('\ninterrupted\n');
  process.exit(130);
});

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`loader: error: ${(err as Error).message}\n`);
    const usage = err instanceof UsageError || String((err as { code?: string }).code).startsWith('ERR_PARSE_ARGS');
    if (usage) process.stderr.write("run 'npm run loader -- --help' for usage\n");
    process.exit(usage ? 2 : 1);
  },
);
