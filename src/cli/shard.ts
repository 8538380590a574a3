// npm run shard -- <source> <path...> [options]: datasets -> WebDataset shards at training size.
import { availableParallelism } from 'node:os';
import { runShardJob } from '../pipeline/shard/shard-job.ts';
import { openSource, sourcesHelp } from '../pipeline/sources/open-source.ts';
import { MAX_LABEL } from '../pipeline/sources/types.ts';
import { defaultIo, EXIT, runCommand, UsageError, withInterrupt, withOutputLock } from './command.ts';
import { MAX_WORKERS, nonNegInt, num, oneOf, optionalNum, parseFlags, positiveInt, str, unit, workerCount, type OptionSpec } from './flags.ts';
import { formatDuration, ProgressLine } from './progress.ts';

const HELP = `Usage: npm run shard -- <source> [path...] [options]

Prepackage a dataset into WebDataset tar shards at training resolution:
<out>/<split>-NNNNNN.tar (+ a DALI .idx each), <out>/index.json (wids shard index with our
fields: classes, resolution, channels, encoding, mean/std, ...), <out>/errors.jsonl.

Sources:
${sourcesHelp()}

Options:
  --out <dir>                  output folder (default: shards/<source>)
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
  --quiet                      no progress line
  -h, --help                   this text

Bad images are skipped and listed in <out>/errors.jsonl; shards are written under a temporary
name and renamed when complete, so an interrupted job resumes from its complete shards when
run again with the same arguments.`;

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

async function main(argv: string[]): Promise<number> {
  const { raw: v, positionals } = parseFlags(argv, SPEC, true);
  if (v['help']) {
    process.stdout.write(`${HELP}\n`);
    return EXIT.ok;
  }
  if (positionals.length === 0) throw new UsageError('give a source kind and its paths');
  const [kind, ...paths] = positionals as [string, ...string[]];
  const res = num(v, 'res', 64, inRange(1, 4096));
  const seed = num(v, 'seed', 0, nonNegInt);
  const split = str(v, 'split') ?? 'train';
  const channelsRaw = optionalNum(v, 'channels', inRange(1, 3));
  if (channelsRaw === 2) throw new UsageError('must be 1 or 3, got 2', 'channels');
  const channels = channelsRaw as 1 | 3 | undefined;
  const valFraction = num(v, 'val-fraction', 0, unit);
  const workers = num(v, 'workers', availableParallelism(), workerCount);
  const quality = num(v, 'quality', 90, inRange(1, 100));
  const samplesPerShard = num(v, 'samples-per-shard', 5000, positiveInt);
  const limit = optionalNum(v, 'limit', nonNegInt);
  const minPerClass = optionalNum(v, 'min-per-class', nonNegInt);
  const count = optionalNum(v, 'count', positiveInt);
  const numClasses = optionalNum(v, 'num-classes', inRange(1, MAX_LABEL));
  const labels = str(v, 'labels');
  const classesFile = str(v, 'classes');
  const size = imageSize(str(v, 'image-size'));
  const quiet = Boolean(v['quiet']);
  const listing = new ProgressLine(process.stderr, quiet);
  const source = await openSource({
    kind,
    paths,
    split,
    seed,
    res,
    ...(channels ? { channels } : {}),
    ...(labels ? { labels } : {}),
    ...(classesFile ? { classesFile } : {}),
    ...(minPerClass !== undefined ? { minPerClass } : {}),
    cifarLabels: oneOf(v, 'cifar-labels', ['fine', 'coarse'] as const, 'fine'),
    ...(count !== undefined ? { count } : {}),
    ...(numClasses !== undefined ? { numClasses } : {}),
    ...(size ? { imageSize: size } : {}),
    onListing: (d, t) => listing.update('listing synsets', d, t),
  });
  if (v['no-shuffle']) source.shuffle = false;
  listing.done();
  const out = str(v, 'out') ?? `shards/${kind}`;
  if (!quiet) process.stderr.write(`source: ${source.description}\nout: ${out} (${workers} workers)\n`);
  const controller = new AbortController();
  const progress = new ProgressLine(process.stderr, quiet);
  const interruptMessages = { first: 'finishing the current task, removing partial files (Ctrl-C again to force)', second: 'quitting at once' };
  const summary = await withOutputLock(out, ['shard', ...argv].join(' '), defaultIo, () =>
    withInterrupt(
      defaultIo,
      interruptMessages,
      () => controller.abort(),
      () =>
        runShardJob(source, {
          out,
          res,
          resize: oneOf(v, 'resize', ['max-side', 'center-crop'] as const, 'max-side'),
          encoding: oneOf(v, 'encoding', ['raw', 'jpeg'] as const, 'raw'),
          quality,
          ...(channels ? { channels } : {}),
          samplesPerShard,
          workers,
          seed,
          split,
          valFraction,
          ...(limit !== undefined ? { limit } : {}),
          overwrite: Boolean(v['overwrite']),
          command: ['npm run shard --', ...argv].join(' '),
          signal: controller.signal,
          onProgress: (p) => progress.update(p.split, p.done, p.total, ` | shards ${p.shardsDone}${p.errors ? ` | ${p.errors} skipped` : ''}`),
        }),
    ),
  );
  progress.done();
  if (!quiet) {
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
