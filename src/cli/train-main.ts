// Everything the `train` command does except building the real data feeds, which the caller
// plugs in: parse, --help, --dry-run, backend selection, Ctrl-C handling, training, summary.
import { inputDim, parseArch, type ModelShape } from '../model/arch.ts';
import { countParams, estimateTrainBytes, forwardMacs, trainFlopsPerSample } from '../model/layout.ts';
import { describeSelection, selectBackend, type BackendDeps, type BackendSelection } from '../train/backend.ts';
import { blasThreadsFor } from '../train/blas/cblas.ts';
import { microBatchSize, type TrainConfig } from '../train/config.ts';
import { OPTIMIZER_SLOTS } from '../train/optim/index.ts';
import { resolveOut } from '../train/run-setup.ts';
import { hasCheckpoint, train, type ProgressEvent, type TrainFeeds, type TrainSummary } from '../train/train.ts';
import { EXIT, defaultIo as baseIo, runCommand, UsageError, withInterrupt, withOutputLock, type CliIo } from './command.ts';
import { ProgressLine } from './progress.ts';
import { COMMAND_DEFAULTS, HELP, parseTrainArgs, type TrainFlags } from './train-flags.ts';

export type MakeFeeds = (opts: TrainFlags) => Promise<TrainFeeds>;

/** The training commands' io: where output goes, plus injection points for tests. */
export interface TrainIo extends CliIo {
  backendDeps?: Partial<BackendDeps>;
  /** Progress line stream (default stderr); null for none. */
  progress?: NodeJS.WriteStream | null;
}

export const defaultIo: TrainIo = baseIo;

/** The dry-run report: size and cost of the model, no data touched beyond its shape. */
export function dryRunReport(o: Pick<TrainConfig, 'arch' | 'batchSize' | 'accum' | 'optimizer'>, shape: ModelShape): Record<string, number | string> {
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
  if (s.finetune)
    lines.push(`fine-tuned (${s.finetune.mode}${s.finetune.mode === 'full' ? `, body lr x${s.finetune.bodyLrMult}` : ''}) from ${s.finetune.weights}`);
  if (s.lastTrainLoss !== null) lines.push(`last train loss ${s.lastTrainLoss.toFixed(4)}`);
  if (s.lastEval) {
    const bad = s.replaced?.val?.count;
    lines.push(
      `val: loss ${s.lastEval.loss.toFixed(4)}, top-1 ${s.lastEval.top1.toFixed(2)}%, top-5 ${s.lastEval.top5.toFixed(2)}%${bad ? ` (NOT VALID: ${bad} val images were undecodable and replaced)` : ''}`,
    );
  }
  for (const [which, r] of Object.entries(s.replaced ?? {})) {
    const first = r.first[0];
    lines.push(`replaced ${which} samples: ${r.count}${first ? ` (first: ${first.shard}#${first.key}: ${first.reason})` : ''}`);
  }
  if (s.checkpoint) lines.push(`checkpoint: ${s.checkpoint}`);
  if (s.modelDir) lines.push(`model: ${s.modelDir}/model.safetensors (+ config.json)`);
  return `${lines.join('\n')}\n`;
}

/**
 * The options of a command, or the exit code when there is nothing to run: --help printed (0).
 * A usage error is thrown (runCommand turns it into 2).
 */
export function parseCommandLine<T>(
  argv: readonly string[],
  parse: (argv: readonly string[]) => { help: true } | { help: false; options: T },
  help: string,
  io: Pick<CliIo, 'stdout'>,
): T | number {
  const parsed = parse(argv);
  if (!parsed.help) return parsed.options;
  io.stdout(help);
  return EXIT.ok;
}

export async function runTrainCli(argv: string[], makeFeeds: MakeFeeds, io: TrainIo = defaultIo): Promise<number> {
  return runCommand('train', io, async () => {
    const parsed = parseCommandLine(argv, parseTrainArgs, HELP, io);
    if (typeof parsed === 'number') return parsed;
    const opts: TrainFlags = parsed;
    if (opts.dryRun) return dryRun(opts, makeFeeds, io);
    if (!opts.data) throw new UsageError('--data is required (or --dry-run)');
    return trainLocked('train', opts, () => makeFeeds(opts), io);
  });
}

/**
 * The part of train and finetune that writes: holding the output folder's lock, refuse to
 * overwrite a run, pick the backend, open the feeds, train and report.
 */
export async function trainLocked(command: string, opts: TrainFlags, makeFeeds: () => Promise<TrainFeeds>, io: TrainIo): Promise<number> {
  const out = resolveOut(opts).out;
  return withOutputLock(out, `${command} --out ${out}`, io, async () => {
    if (!opts.resume && hasCheckpoint(opts.out)) {
      throw new UsageError(`${opts.out} already holds a checkpoint: pass --resume ${opts.out} to continue, or choose another --out`);
    }
    const selection = await selectBackend(opts.backend, io.backendDeps, { threads: blasThreadsFor(opts) });
    io.stderr(`${describeSelection(selection)}\n`);
    return withFeeds(await makeFeeds(), (feeds) => trainAndReport(opts, feeds, selection, io));
  });
}

/** Runs `use` and closes the feeds whatever happens. */
export async function withFeeds<T>(feeds: TrainFeeds, use: (feeds: TrainFeeds) => Promise<T>): Promise<T> {
  try {
    return await use(feeds);
  } finally {
    await feeds.train.close();
    await feeds.val?.close();
  }
}

async function dryRun(opts: TrainFlags, makeFeeds: MakeFeeds, io: TrainIo): Promise<number> {
  let shape: ModelShape = {
    res: opts.res ?? COMMAND_DEFAULTS.res,
    channels: opts.channels ?? COMMAND_DEFAULTS.channels,
    numClasses: opts.numClasses ?? COMMAND_DEFAULTS.numClasses,
  };
  if (opts.data) {
    const info = await withFeeds(await makeFeeds(opts), async (f) => f.train.info);
    shape = { res: info.res, channels: info.channels, numClasses: info.numClasses };
  }
  io.stdout(`${JSON.stringify(dryRunReport(opts, shape))}\n`);
  return EXIT.ok;
}

/** Progress events of the loop drawn as one progress line per epoch (none with --quiet). */
export function progressPrinter(stream: NodeJS.WriteStream | null | undefined, quiet: boolean): ((e: ProgressEvent) => void) | undefined {
  if (stream === null || quiet) return undefined;
  let line: ProgressLine | null = null;
  return (e) => {
    if (e.kind === 'epoch-start') {
      // The epoch's rate counts from its start, not from its first update.
      line = new ProgressLine(stream ?? process.stderr);
      return;
    }
    if (e.kind === 'epoch-end') {
      line?.done();
      line = null;
      return;
    }
    line ??= new ProgressLine(stream ?? process.stderr);
    line.update(`epoch ${e.epoch + 1}/${e.epochs}`, e.done, e.total, ` loss ${e.loss.toFixed(4)} lr ${e.lr.toExponential(2)} stall ${e.stallPct.toFixed(1)}%`);
  };
}

/** Trains with Ctrl-C handling, then prints the summary (stderr) and its JSON line (stdout). */
export async function trainAndReport(opts: TrainFlags, feeds: TrainFeeds, selection: BackendSelection, io: TrainIo): Promise<number> {
  const controller = new AbortController();
  const onProgress = progressPrinter(io.progress, opts.quiet);
  const summary = await withInterrupt(
    io,
    { first: 'finishing this batch, writing a checkpoint (Ctrl-C again to quit at once)', second: 'quitting without a checkpoint' },
    () => controller.abort(),
    () => train(opts, feeds, { signal: controller.signal, log: (l) => io.stderr(`${l}\n`), ...(onProgress ? { onProgress } : {}) }),
  );
  io.stderr(formatSummary(summary));
  io.stdout(`${JSON.stringify({ type: 'summary', backend_selection: selection, ...summary })}\n`);
  return summary.stoppedBy === 'interrupted' ? EXIT.interrupted : EXIT.ok;
}
