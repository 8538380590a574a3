// npm run train: the trainer fed by ring-backed loaders. With no arguments it runs the embedded
// default: a small synthetic dataset made once under shards/, and a short run of a small MLP.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { runShardJob } from '../pipeline/shard/shard-job.ts';
import { openSynthetic } from '../pipeline/sources/synthetic.ts';
import { assertSingleProcess } from '../shared/launcher-env.ts';
import { PRETRAIN_AUGMENT } from '../pipeline/augment/settings.ts';
import { openTrainFeeds } from './feeds.ts';
import { runTrainCli, type MakeFeeds } from './train-main.ts';

const DEFAULT_DATA = 'shards/synthetic-default';

/** The embedded default: 12,000 generated 32x32 images in 10 classes, 2,000 held out. */
const DEFAULT_ARGS = [
  '--data',
  join(DEFAULT_DATA, 'index.json'),
  '--val',
  join(DEFAULT_DATA, 'val.json'),
  '--arch',
  'B_2-Wi_256',
  '--epochs',
  '4',
  '--batch-size',
  '500',
  '--optimizer',
  'lion',
  '--lr',
  '3e-4',
  '--mixup',
  '0',
  '--smoothing',
  '0.1',
  '--checkpoint-every',
  '0',
];

async function ensureDefaultData(): Promise<void> {
  if (existsSync(join(DEFAULT_DATA, 'index.json'))) return;
  process.stderr.write(`making the embedded default dataset in ${DEFAULT_DATA} (once) ...\n`);
  await runShardJob(openSynthetic({ count: 12000, numClasses: 10, width: 32, height: 32, seed: 0 }), {
    out: DEFAULT_DATA,
    res: 32,
    resize: 'max-side',
    encoding: 'raw',
    quality: 90,
    samplesPerShard: 2500,
    seed: 0,
    split: 'train',
    valFraction: 2000 / 12000,
    command: 'npm run train (embedded default)',
  });
}

const makeFeeds: MakeFeeds = (opts) => openTrainFeeds(opts, opts.res, PRETRAIN_AUGMENT, opts.quiet ? undefined : (line) => process.stderr.write(`${line}\n`));

// The TypeScript trainer has no data-parallel support yet: several launched copies would each
// train alone on the whole dataset.
try {
  assertSingleProcess('npm run train');
} catch (e) {
  process.stderr.write(`train: error: ${(e as Error).message}\n`);
  process.exit(2);
}

let argv = process.argv.slice(2);
if (argv.length === 0) {
  await ensureDefaultData();
  argv = [...DEFAULT_ARGS, '--out', `runs/default-${new Date().toISOString().replace(/[:.]/g, '-')}`];
  process.stderr.write(`embedded default run: npm run train -- ${argv.join(' ')}\n`);
}
process.exit(await runTrainCli(argv, makeFeeds));
