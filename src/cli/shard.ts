// npm run shard -- <source> <path...> [options]: datasets -> WebDataset shards at training size.
import { availableParallelism } from 'node:os';
import { openOutputStore, withS3OutputLock } from '../pipeline/shard/s3-output-store.ts';
import { assertMatchesPlan, planRange, planSource, readPlan, writePlan } from '../pipeline/shard/plan.ts';
import { runShardJob, type ShardJobOptions, type ShardJobSummary } from '../pipeline/shard/shard-job.ts';
import { TASKS_ENV } from '../pipeline/shard/task-id.ts';
import { openSource, sourcesHelp } from '../pipeline/sources/open-source.ts';
import { MAX_LABEL, type Source } from '../pipeline/sources/types.ts';
import { isS3Url } from '../shared/s3.ts';
import { defaultIo, EXIT, runCommand, UsageError, withInterrupt, withOutputLock } from './command.ts';
import { MAX_WORKERS, nonNegInt, num, oneOf, optionalNum, parseFlags, positiveInt, str, unit, workerCount, type OptionSpec, type Raw } from './flags.ts';
import { formatDuration, ProgressLine } from './progress.ts';
import { checkRequestAgainstPlan, mergeCommand, REQUEST_FLAGS, reportPlan, reportTask, taskFromFlags, withTaskLock, type ShardRequest } from './shard-tasks.ts';

const HELP = `Usage: npm run shard -- <source> [path...] [options]
       npm run shard -- plan <source> [path...] [options] --out <dir>
       npm run shard -- [<source> [path...] [options]] --out <dir> --task I/N
       npm run shard -- merge --out <dir>

Prepackage a dataset into WebDataset tar shards at training resolution:
<out>/<split>-NNNNNN.tar (+ a DALI .idx each), <out>/index.json (wids shard index with our
fields: classes, resolution, channels, encoding, mean/std, ...), <out>/errors.jsonl.

Sources:
${sourcesHelp()}

Options:
  --out <dir|s3://bucket/prefix>  output folder (default: shards/<source>), or object
                               storage: each tar is staged in $TMPDIR/smlp-shard-staging-*,
                               uploaded once complete, then its .idx and record; index.json
                               last. Credentials and endpoint: the AWS_* variables (README)
  --res <n>                    training resolution (default 64)
  --resize max-side|center-crop  max-side: longer side at most res, aspect kept, never
                               upscaled (what the paper stored); center-crop: res x res
                               (default max-side)
  --encoding raw|jpeg          raw = .npy uint8 H x W x C (default); jpeg = .jpg
  --quality <1-100>            JPEG quality (default 90)
  --samples-per-shard <n>      (default 5000: ~70 MB a shard raw at 64x64)
  --workers <n>                decode threads (default: all cores, ${availableParallelism()} here; at most ${MAX_WORKERS})
  --seed <n>                   shuffle seed (default 0)
  --split <name>               split name in shard names (default train)
  --val-fraction <f>           also hold out this fraction as split "val" (val.json)
  --limit <n>                  only the first n items (after shuffling)
  --channels 1|3               force gray or RGB (default: the source's own)
  --no-shuffle                 keep the source's order
  --min-per-class <n>          imagefolder/imagenet21k: drop classes with fewer images
  --labels <file>              imagenet val: LOC_val_solution.csv or "<file> <synset>" lines
  --classes <file>             fixed class list (text lines or an index.json) so another
                               split gets the same labels
  --cifar-labels fine|coarse   CIFAR-100 label set (default fine)
  --count <n>                  synthetic: number of images (default 10000)
  --num-classes <n>            synthetic: number of classes (default 10)
  --image-size <n|WxH>         synthetic: generated size before resizing (default: --res)
  --overwrite                  replace a different dataset already in --out
  --task I/N                   write only task I's shards of N (I = 0..N-1), no index:
                               N tasks on machines sharing --out write what one run
                               writes; then \`merge\`. Without --task: a Kubernetes
                               Indexed Job's JOB_COMPLETION_INDEX (N from --tasks or
                               ${TASKS_ENV}) or a Slurm array's SLURM_ARRAY_TASK_ID
                               (less SLURM_ARRAY_TASK_MIN; N = SLURM_ARRAY_TASK_COUNT)
  --tasks N                    the number of tasks, where the environment lacks it
  --task none                  a whole-job run, whatever the environment says
  --quiet                      no progress line
  -h, --help                   this text

Bad images are skipped and listed in <out>/errors.jsonl; shards are written under a temporary
name and renamed when complete, so an interrupted job resumes from its complete shards when
run again with the same arguments.

Across machines: \`plan\` lists the source once and records the item order, classes and
splits in <out>/.partial/ (tasks then read their slice of it instead of listing; a task
given only --out and --task takes the source and options from the plan, one that gives
them must give the plan's). Each task locks and cleans only its own shards; a killed task
is run again and completes its part. \`merge\` checks every shard is complete (exit 1
listing the missing ones and their tasks) and writes index.json, val.json and
errors.jsonl as one run would. webdataset sources need their index .json for tasks.`;

const SPEC: OptionSpec = {
  out: { type: 'string' },
  res: { type: 'string' },
  resize: { type: 'string' },
  encoding: { type: 'string' },
  quality: { type: 'string' },
  'samples-per-shard': { type: 'string' },
  workers: { type: 'string' },
  seed: { type: 'string' },
  split: { type: 'string' },
  'val-fraction': { type: 'string' },
  limit: { type: 'string' },
  channels: { type: 'string' },
  'no-shuffle': { type: 'boolean' },
  'min-per-class': { type: 'string' },
  labels: { type: 'string' },
  classes: { type: 'string' },
  'cifar-labels': { type: 'string' },
  count: { type: 'string' },
  'num-classes': { type: 'string' },
  'image-size': { type: 'string' },
  overwrite: { type: 'boolean' },
  task: { type: 'string' },
  tasks: { type: 'string' },
  quiet: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
};

const inRange =
  (lo: number, hi: number) =>
  (v: number): string | null =>
    Number.isInteger(v) && v >= lo && v <= hi ? null : `must be an integer in ${lo}..${hi}`;

function imageSize(v: string | undefined): { width: number; height: number } | undefined {
  if (v === undefined) return undefined;
  const m = /^(\d+)(?:x(\d+))?$/.exec(v);
  if (!m) throw new UsageError(`--image-size must be N or WxH, got "${v}"`);
  return { width: Number(m[1]), height: Number(m[2] ?? m[1]) };
}

/** The request of a command line that names a source: its source and output-shaping options. */
function buildRequest(v: Raw, positionals: string[]): ShardRequest {
  const [kind, ...paths] = positionals as [string, ...string[]];
  const channelsRaw = optionalNum(v, 'channels', inRange(1, 3));
  if (channelsRaw === 2) throw new UsageError('must be 1 or 3, got 2', 'channels');
  const channels = channelsRaw as 1 | 3 | undefined;
  const limit = optionalNum(v, 'limit', nonNegInt);
  const minPerClass = optionalNum(v, 'min-per-class', nonNegInt);
  const count = optionalNum(v, 'count', positiveInt);
  const numClasses = optionalNum(v, 'num-classes', inRange(1, MAX_LABEL));
  const labels = str(v, 'labels');
  const classesFile = str(v, 'classes');
  const size = imageSize(str(v, 'image-size'));
  return {
    source: {
      kind,
      paths,
      ...(labels ? { labels } : {}),
      ...(classesFile ? { classesFile } : {}),
      ...(minPerClass !== undefined ? { minPerClass } : {}),
      cifarLabels: oneOf(v, 'cifar-labels', ['fine', 'coarse'] as const, 'fine'),
      ...(count !== undefined ? { count } : {}),
      ...(numClasses !== undefined ? { numClasses } : {}),
      ...(size ? { imageSize: size } : {}),
      noShuffle: Boolean(v['no-shuffle']),
    },
    job: {
      res: num(v, 'res', 64, inRange(1, 4096)),
      resize: oneOf(v, 'resize', ['max-side', 'center-crop'] as const, 'max-side'),
      encoding: oneOf(v, 'encoding', ['raw', 'jpeg'] as const, 'raw'),
      quality: num(v, 'quality', 90, inRange(1, 100)),
      ...(channels ? { channels } : {}),
      samplesPerShard: num(v, 'samples-per-shard', 5000, positiveInt),
      seed: num(v, 'seed', 0, nonNegInt),
      split: str(v, 'split') ?? 'train',
      valFraction: num(v, 'val-fraction', 0, unit),
      ...(limit !== undefined ? { limit } : {}),
    },
  };
}

async function openRequested(r: ShardRequest, quiet: boolean): Promise<Source> {
  const listing = new ProgressLine(process.stderr, quiet);
  const { noShuffle, ...spec } = r.source;
  const source = await openSource({
    ...spec,
    split: r.job.split,
    seed: r.job.seed,
    res: r.job.res,
    ...(r.job.channels ? { channels: r.job.channels } : {}),
    onListing: (d, t) => listing.update('listing synsets', d, t),
  });
  if (noShuffle) source.shuffle = false;
  listing.done();
  return source;
}

async function main(argv: string[]): Promise<number> {
  const { raw: v, positionals } = parseFlags(argv, SPEC, true);
  if (v['help']) {
    process.stdout.write(`${HELP}\n`);
    return EXIT.ok;
  }
  const step = positionals[0] === 'plan' || positionals[0] === 'merge' ? positionals.shift() : undefined;
  const quiet = Boolean(v['quiet']);
  if (step === 'merge') return mergeCommand(v, positionals, argv, quiet);
  const workers = num(v, 'workers', availableParallelism(), workerCount);
  const given = positionals.length > 0 ? buildRequest(v, positionals) : null;
  const out = str(v, 'out') ?? (given ? `shards/${given.source.kind}` : undefined);
  if (!out) throw new UsageError('give a source kind and its paths (or only --out of a planned job)');
  const store = openOutputStore(out);
  const withOutLock = isS3Url(out) ? withS3OutputLock : withOutputLock;
  // A missing bucket or refused credentials: said at once, before listing or encoding anything.
  if (isS3Url(out)) await store.readFile('index.json');
  const command = ['npm run shard --', ...argv].join(' ');
  if (step === 'plan') {
    if (!given) throw new UsageError('plan needs the source kind and its paths, and the options of the job');
    if (v['task'] !== undefined || v['tasks'] !== undefined)
      throw new UsageError('plan takes no --task/--tasks: it plans the whole job once, for any number of tasks');
    const source = await openRequested(given, quiet);
    if (!quiet) process.stderr.write(`source: ${source.description}\nout: ${out}\n`);
    const summary = await withOutLock(out, ['shard', ...argv].join(' '), defaultIo, () =>
      writePlan(source, { ...given.job, out, workers, command, store }, given),
    );
    if (!quiet) reportPlan(summary, out);
    process.stdout.write(`${JSON.stringify(summary)}\n`);
    return EXIT.ok;
  }
  const task = taskFromFlags(v);
  if (task && v['overwrite']) throw new UsageError("--overwrite cannot be combined with a task: it would remove the other tasks' shards");
  const plan = await readPlan(store);
  let request: ShardRequest;
  if (plan) {
    if (given) checkRequestAgainstPlan(given, plan.file.request, `${out}/.partial/plan.json`);
    else if (REQUEST_FLAGS.some((f) => v[f] !== undefined)) {
      throw new UsageError('with a plan, give the whole command (source and options, checked against the plan) or none of it (the plan provides it)');
    }
    request = given ?? (plan.file.request as ShardRequest);
  } else if (given) request = given;
  else throw new UsageError(`give a source kind and its paths (${out} holds no plan)`);
  const options: ShardJobOptions = {
    ...request.job,
    out,
    workers,
    overwrite: Boolean(v['overwrite']),
    command,
    store,
    ...(task ? { task } : {}),
  };
  const source = plan?.file.items ? await planSource(store, plan, planRange(plan.layout, task)) : await openRequested(request, quiet);
  if (plan) assertMatchesPlan(source, options, plan);
  if (task && source.mode === 'stream' && source.count === null) {
    throw new UsageError(
      'a task needs the number of items up front: re-shard a webdataset source from its index .json (which counts the samples), not from shard URLs',
    );
  }
  if (!quiet) {
    process.stderr.write(`source: ${source.description}${plan?.file.items ? ' (from the plan)' : ''}\nout: ${out} (${workers} workers)\n`);
    if (task) process.stderr.write(`task ${task.index}/${task.count} (${task.from})\n`);
  }
  const controller = new AbortController();
  const progress = new ProgressLine(process.stderr, quiet);
  const interruptMessages = { first: 'finishing the current task, removing partial files (Ctrl-C again to force)', second: 'quitting at once' };
  const run = (): Promise<ShardJobSummary> =>
    withInterrupt(
      defaultIo,
      interruptMessages,
      () => controller.abort(),
      () =>
        runShardJob(source, {
          ...options,
          signal: controller.signal,
          onProgress: (p) => progress.update(p.split, p.done, p.total, ` | shards ${p.shardsDone}${p.errors ? ` | ${p.errors} skipped` : ''}`),
        }),
    );
  const summary = task
    ? await withTaskLock(store, task, ['shard', ...argv].join(' '), run)
    : await withOutLock(out, ['shard', ...argv].join(' '), defaultIo, run);
  progress.done();
  if (!quiet && task) reportTask(summary, out, task);
  else if (!quiet) {
    if (summary.state === 'complete') process.stderr.write(`${out} already holds this dataset, complete; nothing to do\n`);
    for (const s of summary.splits) {
      process.stderr.write(
        `${s.split}: ${s.samples.toLocaleString('en-US')} samples in ${s.shards} shards (${(s.bytes / 1e6).toFixed(1)} MB), ${s.skipped} skipped -> ${s.index}\n`,
      );
    }
    const rate = summary.processed / Math.max(summary.seconds, 1e-9);
    process.stderr.write(
      `done in ${formatDuration(summary.seconds)}: ${Math.round(rate).toLocaleString('en-US')} images/s${summary.errors ? `, ${summary.errors} problems listed in ${out}/errors.jsonl` : ''}\n`,
    );
  }
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  return EXIT.ok;
}

process.exit(await runCommand('shard', defaultIo, () => main(process.argv.slice(2))));
