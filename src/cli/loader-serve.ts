// npm run loader -- serve ...: publishes batch frames over ZeroMQ (see "Serving frames" in the
// README for the protocol). One loader per rank served; Ctrl-C stops cleanly.
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Loader, type LoaderOptions } from '../pipeline/loader/loader.ts';
import { FrameServer } from '../pipeline/serve/server.ts';
import { parseRanks, resolveRank } from '../shared/launcher-env.ts';
import { IN_MEMORY_HELP, inMemoryOption } from './in-memory.ts';
import { UsageError } from './command.ts';

export const SERVE_HELP = `Usage: npm run loader -- serve --data <index.json|dir|shard urls> --bind <endpoint> [options]

Publishes batch frames over ZeroMQ, exactly as they sit in the ring and as dump writes them.
A consumer (ZeroMQ DEALER) says hello with its rank and the (epoch, step) it wants next, and
acknowledges each frame on receipt; see "Serving frames" in the README for the protocol and
examples/torch-ddp for a PyTorch DDP consumer.

Options:
  --data <spec>         dataset: index.json, a folder with one, or shard paths/URLs
                        (local, http(s)://, s3://bucket/key; an s3:// folder means its index.json)
  --bind <endpoint>     ipc://<path> (one host) or tcp://<host>:<port> (tcp://*:5555 for all
                        interfaces; port * picks a free one); repeat to bind several
  --rank <R>            serve this rank (default: from RANK, SLURM_PROCID or JOB_COMPLETION_INDEX)
  --world <W>           world size (default: from WORLD_SIZE or SLURM_NTASKS; else 1)
  --ranks <list>        serve several ranks from this process: "all", "0-3", "0,2"
  --batch-size <N>      rows per batch, per rank (default 1024)
  --eval                eval mode (sequential, centre crop) instead of train (shuffled, augmented)
  --seed <S>            plan and augmentation seed (default 0)
  --epoch <E>           first epoch served (default 0)
  --epochs <N>          serve epochs before N, then send "end" (default: no end)
  --res <n>             output resolution (default: the dataset's)
  --normalize dataset|imagenet|none   per-channel statistics (default dataset)
  --frame-dtype float32|uint8         float32 (default): normalised values; uint8: the rounded
                        pixels, with the frame's "mean"/"std" to apply (4x fewer bytes to send)
  --in-memory           ${IN_MEMORY_HELP}; one copy for all the ranks served
  --workers <n>         loader threads in all, split among the ranks (default: all cores, ${availableParallelism()} here)
  --window <n>          most unacknowledged frames per consumer (default 2)
  --prefetch <n>        frames prepared ahead per rank beyond the window (default 2)
  --quiet               no per-consumer log lines
  -h, --help            this text

Memory: per rank, (window + prefetch) ring slots of one frame each, plus the sample table; with
--in-memory, the shards once.`;

export class ServeUsageError extends UsageError {}

/** Runs the server until SIGINT/SIGTERM; resolves with the exit code. */
export async function serveMain(argv: string[]): Promise<number> {
  const { values: v } = parseArgs({
    args: argv,
    options: {
      data: { type: 'string' },
      bind: { type: 'string', multiple: true },
      rank: { type: 'string' },
      world: { type: 'string' },
      ranks: { type: 'string' },
      eval: { type: 'boolean' },
      'batch-size': { type: 'string', default: '1024' },
      seed: { type: 'string', default: '0' },
      epoch: { type: 'string', default: '0' },
      epochs: { type: 'string' },
      res: { type: 'string' },
      workers: { type: 'string' },
      normalize: { type: 'string', default: 'dataset' },
      'frame-dtype': { type: 'string', default: 'float32' },
      window: { type: 'string', default: '2' },
      prefetch: { type: 'string', default: '2' },
      'in-memory': { type: 'boolean' },
      quiet: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) {
    process.stdout.write(`${SERVE_HELP}\n`);
    return 0;
  }
  if (!v.data || !v.bind?.length) throw new ServeUsageError('serve needs --data and --bind');
  const int = (name: string, s: string, min = 0): number => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < min) throw new ServeUsageError(`--${name} must be an integer >= ${min}, got "${s}"`);
    return n;
  };
  const normalize = v.normalize!;
  if (!['dataset', 'imagenet', 'none'].includes(normalize)) throw new ServeUsageError(`--normalize must be dataset, imagenet or none, got "${normalize}"`);
  const frameDtype = v['frame-dtype']!;
  if (frameDtype !== 'float32' && frameDtype !== 'uint8') throw new ServeUsageError(`--frame-dtype must be float32 or uint8, got "${frameDtype}"`);
  const who = resolveRank({ rank: v.rank, world: v.world });
  const ranks = v.ranks !== undefined ? parseRanks(v.ranks, who.world) : [who.rank];
  const window = int('window', v.window!, 1);
  const prefetch = int('prefetch', v.prefetch!, 1);
  const firstEpoch = int('epoch', v.epoch!);
  const epochs = v.epochs !== undefined ? int('epochs', v.epochs, 1) : undefined;
  const totalWorkers = v.workers !== undefined ? int('workers', v.workers, 1) : availableParallelism();
  const workers = Math.max(1, Math.floor(totalWorkers / ranks.length));
  const base: LoaderOptions = {
    data: v.data,
    batchSize: int('batch-size', v['batch-size']!, 1),
    mode: v.eval ? 'eval' : 'train',
    seed: int('seed', v.seed!),
    world: who.world,
    workers,
    slots: window + prefetch,
    ...(v.res !== undefined ? { res: int('res', v.res, 1) } : {}),
    ...(epochs !== undefined ? { lastEpoch: epochs - 1 } : {}),
    normalize: normalize as 'dataset' | 'imagenet' | 'none',
    frameDtype,
  };
  const say = (line: string): void => void process.stderr.write(`serve: ${line}\n`);
  say(`ranks ${ranks.join(',')} of ${who.world} (${v.ranks !== undefined ? '--ranks' : who.source === 'default' ? 'default' : who.detail})`);
  const loaders: Loader[] = [];
  let server: FrameServer | null = null;
  let signal: string | null = null;
  let wake!: () => void;
  const signalled = new Promise<void>((resolve) => (wake = resolve));
  const onSignal = (name: string): void => {
    if (signal) return;
    signal = name;
    say(`${name}: stopping`);
    wake();
  };
  process.on('SIGINT', () => onSignal('SIGINT'));
  process.on('SIGTERM', () => onSignal('SIGTERM'));
  try {
    for (const rank of ranks) {
      if (signal) break;
      // One copy of the shards for every rank served here.
      const inMemory = loaders[0]?.heldShards ?? inMemoryOption(Boolean(v['in-memory']), say);
      const loader = await Loader.open({ ...base, rank, inMemory, onCorrupt: (c) => say(`rank ${rank}: corrupt sample replaced: ${JSON.stringify(c)}`) });
      loaders.push(loader);
      say(`rank ${rank}: ${loader.describe()}`);
    }
    if (!signal) {
      server = await FrameServer.start({
        bind: v.bind,
        sources: loaders,
        window,
        firstEpoch,
        ...(epochs !== undefined ? { epochs } : {}),
        log: v.quiet ? () => undefined : say,
      });
    }
  } catch (e) {
    for (const l of loaders) await l.close();
    throw e;
  }
  if (server) {
    const plan = loaders[0]!.plan;
    process.stdout.write(
      `${JSON.stringify({
        serving: server.endpoints,
        ranks,
        world: who.world,
        batch_size: plan.batchSize,
        seed: plan.seed,
        mode: plan.mode,
        steps_per_epoch: loaders[0]!.stepsPerEpoch(),
        first_epoch: firstEpoch,
        epochs: epochs ?? null,
        window,
      })}\n`,
    );
    say(`serving on ${server.endpoints.join(' ')}; Ctrl-C stops`);
  }
  // Serve until a signal (the socket keeps the event loop alive), then release everything.
  await signalled;
  if (server) await server.close();
  else for (const l of loaders) await l.close();
  if (server) say(`stopped after ${server.stats.framesSent} frames (${(server.stats.bytesSent / 2 ** 30).toFixed(2)} GiB)`);
  return 0;
}
