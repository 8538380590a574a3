// npm run shard -- <source> <path...> [options]: datasets -> WebDataset shards at training size.
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { runShardJob } from '../pipeline/shard/shard-job.ts';
import { openSource, sourcesHelp } from '../pipeline/sources/open-source.ts';
import { defaultIo, EXIT, runCommand, UsageError, withInterrupt } from './command.ts';
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
  --workers <n>                decode threads (default: all cores, ${availableParallelism()} here)
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


function int(name: string, v: string | undefined, fallback?: number): number | undefined {
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${name} must be a non-negative integer, got "${v}"`);
  return n;
}

function oneOf<T extends string>(name: string, v: string | undefined, allowed: readonly T[], fallback: T): T {
  if (v === undefined) return fallback;
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`--${name} must be one of ${allowed.join(', ')}, got "${v}"`);
  return v as T;
}

function imageSize(v: string | undefined): { width: number; height: number } | undefined {
  if (v === undefined) return undefined;
  const m = /^(\d+)(?:x(\d+))?$/.exec(v);
  if (!m) throw new UsageError(`--image-size must be N or WxH, got "${v}"`);
  return { width: Number(m[1]), height: Number(m[2] ?? m[1]) };
}

async function main(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
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
    },
  });
  if (v.help || positionals.length === 0) {
    process.stdout.write(`${HELP}\n`);
    return v.help ? 0 : 2;
  }
  const [kind, ...paths] = positionals as [string, ...string[]];
  const res = int('res', v.res, 64)!;
  const seed = int('seed', v.seed, 0)!;
  const split = v.split ?? 'train';
  const channelsRaw = int('channels', v.channels);
  if (channelsRaw !== undefined && channelsRaw !== 1 && channelsRaw !== 3) throw new UsageError(`--channels must be 1 or 3, got ${channelsRaw}`);
  const channels = channelsRaw as 1 | 3 | undefined;
  const valFraction = v['val-fraction'] === undefined ? 0 : Number(v['val-fraction']);
  if (!Number.isFinite(valFraction)) throw new UsageError(`--val-fraction must be a number, got "${v['val-fraction']}"`);
  const workers = int('workers', v.workers, availableParallelism())!;
  if (workers < 1) throw new UsageError('--workers must be at least 1');
  const quiet = Boolean(v.quiet);
  const listing = new ProgressLine(process.stderr, quiet);
  const source = await openSource({
    kind,
    paths,
    split,
    seed,
    res,
    ...(channels ? { channels } : {}),
    ...(v.labels ? { labels: v.labels } : {}),
    ...(v.classes ? { classesFile: v.classes } : {}),
    ...(v['min-per-class'] !== undefined ? { minPerClass: int('min-per-class', v['min-per-class'])! } : {}),
    cifarLabels: oneOf('cifar-labels', v['cifar-labels'], ['fine', 'coarse'] as const, 'fine'),
    ...(v.count !== undefined ? { count: int('count', v.count)! } : {}),
    ...(v['num-classes'] !== undefined ? { numClasses: int('num-classes', v['num-classes'])! } : {}),
    ...(v['image-size'] ? { imageSize: imageSize(v['image-size'])! } : {}),
    onListing: (d, t) => listing.update('listing synsets', d, t),
  });
  if (v['no-shuffle']) source.shuffle = false;
  listing.done();
  const out = v.out ?? `shards/${kind}`;
  if (!quiet) process.stderr.write(`source: ${source.description}\nout: ${out} (${workers} workers)\n`);
  const controller = new AbortController();
  const progress = new ProgressLine(process.stderr, quiet);
  const limit = int('limit', v.limit);
  const interruptMessages = { first: 'finishing the current task, removing partial files (Ctrl-C again to force)', second: 'quitting at once' };
  const summary = await withInterrupt(defaultIo, interruptMessages, () => controller.abort(), () => runShardJob(source, {
    out,
    res,
    resize: oneOf('resize', v.resize, ['max-side', 'center-crop'] as const, 'max-side'),
    encoding: oneOf('encoding', v.encoding, ['raw', 'jpeg'] as const, 'raw'),
    quality: int('quality', v.quality, 90)!,
    ...(channels ? { channels } : {}),
    samplesPerShard: int('samples-per-shard', v['samples-per-shard'], 5000)!,
    workers,
    seed,
    split,
    valFraction,
    ...(limit !== undefined ? { limit } : {}),
    overwrite: Boolean(v.overwrite),
    command: ['npm run shard --', ...argv].join(' '),
    signal: controller.signal,
    onProgress: (p) => progress.update(p.split, p.done, p.total, ` | shards ${p.shardsDone}${p.errors ? ` | ${p.errors} skipped` : ''}`),
  }));
  progress.done();
  if (!quiet) {
    if (summary.state === 'complete') process.stderr.write(`${out} already holds this dataset, complete; nothing to do\n`);
    for (const s of summary.splits) {
      process.stderr.write(`${s.split}: ${s.samples.toLocaleString('en-US')} samples in ${s.shards} shards (${(s.bytes / 1e6).toFixed(1)} MB), ${s.skipped} skipped -> ${s.index}\n`);
    }
    const rate = summary.processed / Math.max(summary.seconds, 1e-9);
    process.stderr.write(`done in ${formatDuration(summary.seconds)}: ${Math.round(rate).toLocaleString('en-US')} images/s${summary.errors ? `, ${summary.errors} problems listed in ${out}/errors.jsonl` : ''}\n`);
  }
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  return EXIT.ok;
}

process.exit(await runCommand('shard', defaultIo, () => main(process.argv.slice(2))));
