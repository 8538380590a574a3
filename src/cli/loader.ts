// npm run loader -- dump ...: writes the first K batch frames of epoch 0 back to back into one
// file, exactly as they sit in the ring (each a complete msgpack document).
import { open, rename, rm } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { Loader, type LoaderOptions } from '../pipeline/loader/loader.ts';
import { resolvePretrained } from '../train/pretrained.ts';
import { LauncherEnvError, resolveRank } from '../shared/launcher-env.ts';
import { IN_MEMORY_HELP, inMemoryOption } from './in-memory.ts';
import { defaultIo, EXIT, runCommand, UsageError, withInterrupt } from './command.ts';
import { MAX_WORKERS, nonNegInt, num, oneOf, optionalNum, parseFlags, positiveInt, str, workerCount, type OptionSpec, type Raw } from './flags.ts';
import { serveMain } from './loader-serve.ts';

const HELP = `Usage: npm run loader -- dump --data <index.json|dir|shard urls> --batches K --out <file> [options]
       npm run loader -- serve --data <index.json|dir|shard urls> --bind <endpoint> [options]   (serve --help)

Writes the first K batch frames of epoch 0 back to back into <file>: the exact msgpack
documents the trainer reads from the ring (see "Batch frames" in the README). Any msgpack
library can read them: e.g. Python's msgpack.Unpacker over the file.

Options:
  --data <spec>         dataset: index.json, a folder with one, or shard paths/URLs
                        (local, http(s)://, s3://bucket/key; an s3:// folder means its index.json)
  --batches <K>         frames to write (default 1)
  --out <file>          output file (written as <file>.tmp, then renamed)
  --eval                eval mode (sequential, centre crop) instead of train (shuffled, augmented)
  --batch-size <N>      rows per batch (default 1024)
  --seed <S>            plan and augmentation seed (default 0)
  --epoch <E>           epoch to dump (default 0)
  --res <n>             output resolution (default: the dataset's)
  --workers <n>         loader threads (default: all cores, ${availableParallelism()} here; at most ${MAX_WORKERS})
  --verify              check every shard's md5 against the index first (sizes are always checked)
  --in-memory           ${IN_MEMORY_HELP}
  --normalize dataset|imagenet|none   per-channel statistics (default dataset)
  --model <dir>         normalise as this model was trained (its config.json), instead of --normalize
  --rank <R> --world <W>  this rank's share (default: from RANK/WORLD_SIZE, SLURM_PROCID/SLURM_NTASKS,
                        JOB_COMPLETION_INDEX; else rank 0 of 1)
  --frame-dtype float32|uint8         float32 (default): normalised values; uint8: the rounded
                        pixels, with the statistics as the frame's "mean"/"std" to apply
  -h, --help            this text`;

const DUMP_SPEC: OptionSpec = {
  data: { type: 'string' },
  batches: { type: 'string' },
  out: { type: 'string' },
  eval: { type: 'boolean' },
  'batch-size': { type: 'string' },
  seed: { type: 'string' },
  epoch: { type: 'string' },
  res: { type: 'string' },
  workers: { type: 'string' },
  normalize: { type: 'string' },
  rank: { type: 'string' },
  world: { type: 'string' },
  'frame-dtype': { type: 'string' },
  verify: { type: 'boolean' },
  'in-memory': { type: 'boolean' },
  model: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
};

/** --model: the frames that model sees (its recorded normalisation); else --normalize. */
function dumpNormalize(v: Raw): LoaderOptions['normalize'] {
  const model = str(v, 'model');
  if (model === undefined) return oneOf(v, 'normalize', ['dataset', 'imagenet', 'none'] as const, 'dataset');
  if (v['normalize'] !== undefined) throw new UsageError('give --model or --normalize, not both');
  const n = resolvePretrained(model).config.preprocessing?.normalization;
  if (!n) throw new UsageError(`${model} records no input normalisation (written before it was); use --normalize`, 'model');
  return { mean: n.mean, std: n.std };
}

async function dump(argv: string[]): Promise<number> {
  const { raw: v } = parseFlags(argv, DUMP_SPEC);
  if (v['help']) {
    process.stdout.write(`${HELP}\n`);
    return EXIT.ok;
  }
  const data = str(v, 'data');
  const out = str(v, 'out');
  if (!data || !out) throw new UsageError('dump needs --data and --out');
  const batches = num(v, 'batches', 1, nonNegInt);
  const res = optionalNum(v, 'res', positiveInt);
  const workers = optionalNum(v, 'workers', workerCount);
  const { rank, world } = resolveRank({ rank: str(v, 'rank'), world: str(v, 'world') });
  const loader = await Loader.open({
    rank,
    world,
    data,
    batchSize: num(v, 'batch-size', 1024, positiveInt),
    mode: v['eval'] ? 'eval' : 'train',
    seed: num(v, 'seed', 0, nonNegInt),
    ...(res !== undefined ? { res } : {}),
    ...(workers !== undefined ? { workers } : {}),
    normalize: dumpNormalize(v),
    frameDtype: oneOf(v, 'frame-dtype', ['float32', 'uint8'] as const, 'float32'),
    verify: Boolean(v['verify']),
    inMemory: inMemoryOption(Boolean(v['in-memory']), (line) => process.stderr.write(`${line}\n`)),
  });
  process.stderr.write(`${loader.describe()}\n`);
  const tmp = `${out}.tmp`;
  const file = await open(tmp, 'w');
  const controller = new AbortController();
  let written = 0;
  let bytes = 0;
  try {
    await withInterrupt(
      defaultIo,
      { first: 'stopping; the partial file is removed', second: 'quitting at once' },
      () => controller.abort(),
      async () => {
        for await (const b of loader.epoch(num(v, 'epoch', 0, nonNegInt))) {
          if (written >= batches || controller.signal.aborted) {
            b.release();
            break;
          }
          await file.write(b.frame);
          bytes += b.frame.length;
          b.release();
          written++;
        }
      },
    );
    await file.close();
    if (controller.signal.aborted) {
      await rm(tmp, { force: true });
      return EXIT.interrupted;
    }
    await rename(tmp, out);
  } catch (err) {
    await file.close().catch(() => undefined);
    await rm(tmp, { force: true });
    throw err;
  } finally {
    await loader.close();
  }
  if (loader.corruptCount) process.stderr.write(`${loader.corruptCount} corrupt samples replaced\n`);
  process.stderr.write(`wrote ${written} frames (${(bytes / 2 ** 20).toFixed(1)} MiB) to ${out}\n`);
  process.stdout.write(`${JSON.stringify({ out, frames: written, bytes })}\n`);
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
