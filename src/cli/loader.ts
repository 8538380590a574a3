// npm run loader -- dump ...: writes the first K batch frames of epoch 0 back to back into one
// file, exactly as they sit in the ring (each a complete msgpack document).
import { open, rename, rm } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Loader } from '../pipeline/loader/loader.ts';
import { LauncherEnvError, resolveRank } from '../shared/launcher-env.ts';
import { defaultIo, EXIT, runCommand, UsageError, withInterrupt } from './command.ts';
import { serveMain } from './loader-serve.ts';

const HELP = `Usage: npm run loader -- dump --data <index.json|dir|shard urls> --batches K --out <file> [options]
       npm run loader -- serve --data <index.json|dir|shard urls> --bind <endpoint> [options]   (serve --help)

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
  --rank <R> --world <W>  this rank's share (default: from RANK/WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS,
                        JOB_COMPLETION_INDEX; else rank 0 of 1)
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
      rank: { type: 'string' },
      world: { type: 'string' },
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
  const batches = int('batches', v.batches!);
  const { rank, world } = resolveRank({ rank: v.rank, world: v.world });
  const loader = await Loader.open({
    rank,
    world,
    data: v.data,
    batchSize: int('batch-size', v['batch-size']!),
    mode: v.eval ? 'eval' : 'train',
    seed: int('seed', v.seed!),
    ...(v.res ? { res: int('res', v.res) } : {}),
    ...(v.workers ? { workers: int('workers', v.workers) } : {}),
    normalize: normalize as 'dataset' | 'imagenet' | 'none',
  });
  process.stderr.write(`${loader.describe()}\n`);
  const tmp = `${v.out}.tmp`;
  const file = await open(tmp, 'w');
  const controller = new AbortController();
  let written = 0;
  let bytes = 0;
  try {
    await withInterrupt(defaultIo, { first: 'stopping; the partial file is removed', second: 'quitting at once' }, () => controller.abort(), async () => {
      for await (const b of loader.epoch(int('epoch', v.epoch!))) {
        if (written >= batches || controller.signal.aborted) {
          b.release();
          break;
        }
        await file.write(b.frame);
        bytes += b.frame.length;
        b.release();
        written++;
      }
    });
    await file.close();
    if (controller.signal.aborted) {
      await rm(tmp, { force: true });
      return EXIT.interrupted;
    }
    await rename(tmp, v.out);
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
  return EXIT.ok;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === 'dump') return dump(rest);
  if (command === 'serve') return serveMain(rest);
  if (command === undefined || command === '--help' || command === '-h') {
    process.stdout.write(`${HELP}\n`);
    return EXIT.ok;
  }
  throw new UsageError(`unknown subcommand "${command}" (expected: dump, serve)`);
}

process.exit(
  await runCommand('loader', defaultIo, async () => {
    try {
      return await main(process.argv.slice(2));
    } catch (e) {
      // A rank that the launcher's environment gives wrongly is a usage error too.
      if (e instanceof LauncherEnvError) throw new UsageError(e.message);
      throw e;
    }
  }),
);
