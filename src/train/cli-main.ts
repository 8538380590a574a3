// Everything the `train` command does except building the real data feeds, which the caller
// plugs in: parse, --help, --dry-run, backend selection, Ctrl-C handling, training, summary.
import { inputDim, parseArch, type ModelShape } from '../model/arch.ts';
import { countParams, estimateTrainBytes, forwardMacs, trainFlopsPerSample } from '../model/layout.ts';
import { describeSelection, selectBackend, type BackendDeps, type BackendSelection } from './backend.ts';
import { blasThreadsFor } from './blas/cblas.ts';
import type { DataFeed } from './data-feed.ts';
import { OPTIMIZER_SLOTS } from './optim/index.ts';
import { DEFAULTS, HELP, microBatchSize, OptionsError, parseTrainArgs, type TrainOptions } from './options.ts';
import { hasCheckpoint, train, type TrainFeeds, type TrainSummary } from './train.ts';

export type MakeFeeds = (opts: TrainOptions) => Promise<{ train: DataFeed; val?: DataFeed }>;

export interface CliIo {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
  /** Where SIGINT is listened for (tests pass an EventEmitter). */
  signals?: Pick<NodeJS.Process, 'on' | 'off'>;
  backendDeps?: Partial<BackendDeps>;
  progress?: NodeJS.WriteStream | null;
}

export const defaultIo: CliIo = {
  stdout: (s) => process.stdout.write(s),
  stderr: (s) => process.stderr.write(s),
};

export const EXIT = { ok: 0, failure: 1, usage: 2, interrupted: 130 } as const;

/** The dry-run report: size and cost of the model, no data touched beyond its shape. */
export function dryRunReport(o: Pick<TrainOptions, 'arch' | 'batchSize' | 'accum' | 'optimizer'>, shape: ModelShape): Record<string, number | string> {
  const spec = parseArch(o.arch);
  return {
    arch: spec.name,
    params: countParams(spec, shape),
    flops_per_sample: trainFlopsPerSample(spec, shape),
    forward_macs: forwardMacs(spec, shape),
    input_dim: inputDim(shape),
    res: shape.res,
    channels: shape.channels,
    num_classes: shape.numClasses,
    micro_batch: microBatchSize(o),
    train_bytes_estimate: estimateTrainBytes(spec, shape, microBatchSize(o), OPTIMIZER_SLOTS[o.optimizer]),
  };
}

export function formatSummary(s: TrainSummary): string {
  const lines = [
    `${s.stoppedBy === 'completed' ? 'done' : `stopped (${s.stoppedBy})`}: ${s.arch}, ${s.epochsCompleted} epoch(s), ${s.globalStep} updates, ${s.samples.toLocaleString('en-US')} images in ${s.seconds.toFixed(1)} s`,
    `throughput: ${s.imagesPerSec.toFixed(1)} images/s, ${s.gflops.toFixed(2)} GFLOP/s, stall ${s.stallPct.toFixed(1)}% (backend ${s.backend})`,
    `compute: ${s.computePflop.toPrecision(4)} PFLOP (${s.computeFlops.toExponential(3)} FLOPs = 3 x forward FLOPs x samples, whole run)`,
  ];
  if (s.finetune) lines.push(`fine-tuned (${s.finetune.mode}${s.finetune.mode === 'full' ? `, body lr x${s.finetune.bodyLrMult}` : ''}) from ${s.finetune.weights}`);
  if (s.lastTrainLoss !== null) lines.push(`last train loss ${s.lastTrainLoss.toFixed(4)}`);
  if (s.lastEval) lines.push(`val: loss ${s.lastEval.loss.toFixed(4)}, top-1 ${s.lastEval.top1.toFixed(2)}%, top-5 ${s.lastEval.top5.toFixed(2)}%`);
  if (s.checkpoint) lines.push(`checkpoint: ${s.checkpoint}`);
  if (s.modelDir) lines.push(`model: ${s.modelDir}/model.safetensors (+ config.json)`);
  return `${lines.join('\n')}\n`;
}

/**
 * The options of a command, or the exit code when there is nothing to run: --help printed
 * (0), or a usage error reported (2).
 */
export function parseCommandLine<T>(
  command: string,
  argv: readonly string[],
  parse: (argv: readonly string[]) => { help: true } | { help: false; options: T },
  help: string,
  io: Pick<CliIo, 'stdout' | 'stderr'>,
): T | number {
  try {
    const parsed = parse(argv);
    if (!parsed.help) return parsed.options;
    io.stdout(help);
    return EXIT.ok;
  } catch (e) {
    if (!(e instanceof OptionsError)) throw e;
    io.stderr(`${command}: ${e.message}\n(see --help)\n`);
    return EXIT.usage;
  }
}

export async function runTrainCli(argv: string[], makeFeeds: MakeFeeds, io: CliIo = defaultIo): Promise<number> {
  const parsed = parseCommandLine('train', argv, parseTrainArgs, HELP, io);
  if (typeof parsed === 'number') return parsed;
  const opts: TrainOptions = parsed;

  let feeds: TrainFeeds | null = null;
  try {
    if (opts.dryRun) {
      let shape: ModelShape = {
        res: opts.res ?? DEFAULTS.res,
        channels: opts.channels ?? DEFAULTS.channels,
        numClasses: opts.numClasses ?? DEFAULTS.numClasses,
      };
      if (opts.data) {
        feeds = await makeFeeds(opts);
        const i = feeds.train.info;
        shape = { res: i.res, channels: i.channels, numClasses: i.numClasses };
      }
      io.stdout(`${JSON.stringify(dryRunReport(opts, shape))}\n`);
      return EXIT.ok;
    }
    if (!opts.data) {
      io.stderr('train: --data is required (or --dry-run)\n');
      return EXIT.usage;
    }
    if (!opts.resume && hasCheckpoint(opts.out)) {
      io.stderr(`train: ${opts.out} already holds a checkpoint: pass --resume ${opts.out} to continue, or choose another --out\n`);
      return EXIT.usage;
    }

    const selection = await selectBackend(opts.backend, io.backendDeps, { threads: blasThreadsFor(opts) });
    io.stderr(`${describeSelection(selection)}\n`);
    feeds = await makeFeeds(opts);
    return await trainAndReport(opts, feeds, selection, io);
  } catch (e) {
    return reportFailure('train', e, io);
  } finally {
    if (feeds) {
      await feeds.train.close();
      await feeds.val?.close();
    }
  }
}

/** Trains with Ctrl-C handling, then prints the summary (stderr) and its JSON line (stdout). */
export async function trainAndReport(opts: TrainOptions, feeds: TrainFeeds, selection: BackendSelection, io: CliIo): Promise<number> {
  const controller = new AbortController();
  const signals = io.signals ?? process;
  let interrupts = 0;
  const onSigint = (): void => {
    interrupts++;
    if (interrupts === 1) {
      io.stderr('\ninterrupt: finishing this batch, writing a checkpoint (Ctrl-C again to quit at once)\n');
      controller.abort();
    } else {
      io.stderr('\ninterrupt: quitting without a checkpoint\n');
      process.exit(EXIT.interrupted);
    }
  };
  signals.on('SIGINT', onSigint);
  let summary: TrainSummary;
  try {
    summary = await train(opts, feeds, {
      signal: controller.signal,
      log: (l) => io.stderr(`${l}\n`),
      progress: io.progress,
    });
  } finally {
    signals.off('SIGINT', onSigint);
  }
  io.stderr(formatSummary(summary));
  io.stdout(`${JSON.stringify({ type: 'summary', backend_selection: selection, ...summary })}\n`);
  return summary.stoppedBy === 'interrupted' ? EXIT.interrupted : EXIT.ok;
}

/** Prints an error as "<cmd>: <Name>: <message>" (the stack only with DEBUG set); exit 1. */
export function reportFailure(cmd: string, e: unknown, io: CliIo): number {
  // Errors carry their own what/where; the stack helps only for bugs, so keep it out of the way.
  const err = e instanceof Error ? e : new Error(String(e));
  io.stderr(`${cmd}: ${err.name && err.name !== 'Error' ? `${err.name}: ` : ''}${err.message}\n`);
  if (process.env['DEBUG']) io.stderr(`${err.stack ?? ''}\n`);
  return EXIT.failure;
}
