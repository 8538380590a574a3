import t from 'tap';
import { UsageError } from '../../src/cli/command.ts';
import { COMMAND_DEFAULTS, HELP, parseTrainArgs, type TrainFlags } from '../../src/cli/train-flags.ts';
import { microBatchSize, mixupAlpha, trainConfig } from '../../src/train/config.ts';

function parse(args: string[]): TrainFlags {
  const r = parseTrainArgs(args);
  if (r.help) throw new Error('unexpected help');
  return r.options;
}

t.test("defaults are the paper's ImageNet-21k pre-training recipe", async (t) => {
  const o = parse([]);
  t.match(o, {
    arch: 'B_12-Wi_1024',
    batchSize: 16384,
    optimizer: 'lion',
    lr: 5e-5,
    weightDecay: 1e-3,
    smoothing: 0.3,
    mixup: 0.8,
    augment: true,
    schedule: 'none',
    warmup: 0,
    clip: 0,
    accum: 1,
    backend: 'auto',
    dryRun: false,
    evalBatchSize: 16384,
    out: 'runs/B_12-Wi_1024',
    inMemory: false,
  });
  t.equal(o.res, undefined, 'model shape comes from the data unless given');
  t.same([COMMAND_DEFAULTS.res, COMMAND_DEFAULTS.channels, COMMAND_DEFAULTS.numClasses], [64, 3, 11230], 'dry-run shape: ImageNet-21k at 64x64');
});

t.test('every flag', async (t) => {
  const o = parse([
    '--data',
    'tr/index.json',
    '--val',
    'va/index.json',
    '--arch',
    'S_6-Wi_512',
    '--epochs',
    '3',
    '--batch-size',
    '256',
    '--optimizer',
    'sgd',
    '--lr',
    '0.01',
    '--weight-decay',
    '0',
    '--smoothing',
    '0.1',
    '--mixup',
    '0',
    '--no-augment',
    '--out',
    'o',
    '--backend',
    'wasm',
    '--resume',
    'r',
    '--dry-run',
    '--res',
    '32',
    '--channels',
    '1',
    '--num-classes',
    '10',
    '--warmup',
    '5',
    '--schedule',
    'cosine',
    '--clip',
    '1',
    '--accum',
    '4',
    '--checkpoint-every',
    '7',
    '--seed',
    '9',
    '--eval-batch-size',
    '100',
    '--workers',
    '3',
    '--max-steps',
    '11',
    '--momentum',
    '0.8',
    '--mixup-partner',
    'permute',
    '--quiet',
    '--in-memory',
  ]);
  t.match(o, {
    data: 'tr/index.json',
    val: 'va/index.json',
    arch: 'S_6-Wi_512',
    epochs: 3,
    batchSize: 256,
    optimizer: 'sgd',
    lr: 0.01,
    weightDecay: 0,
    smoothing: 0.1,
    mixup: 0,
    augment: false,
    out: 'o',
    backend: 'wasm',
    resume: 'r',
    dryRun: true,
    res: 32,
    channels: 1,
    numClasses: 10,
    warmup: 5,
    schedule: 'cosine',
    clip: 1,
    accum: 4,
    checkpointEvery: 7,
    seed: 9,
    evalBatchSize: 100,
    workers: 3,
    maxSteps: 11,
    momentum: 0.8,
    mixupPartner: 'permute',
    quiet: true,
    inMemory: true,
  });
  t.equal(microBatchSize(o), 64);
  t.equal(parse(['--resume', 'runs/x']).out, 'runs/x', '--resume without --out continues in place');
});

t.test('MixUp belongs to augmentation', async (t) => {
  t.equal(mixupAlpha({ mixup: 0.8, augment: true }), 0.8);
  t.equal(mixupAlpha({ mixup: 0.8, augment: false }), 0);
});

t.test('bad values name the option', async (t) => {
  const bad: [string[], RegExp][] = [
    [['--epochs', '0'], /--epochs: must be a positive integer/],
    [['--epochs', '1.5'], /--epochs/],
    [['--lr', 'fast'], /--lr: not a number/],
    [['--lr=-1'], /--lr: must be >= 0/],
    [['--smoothing', '1'], /--smoothing: must be in \[0, 1\)/],
    [['--optimizer', 'adam'], /--optimizer: expected one of lion, lamb, adamw, sgd/],
    [['--backend', 'gpu'], /--backend: expected one of auto, tfjs-node-gpu, webgpu, tfjs-node, wasm, cpu/],
    [['--arch', 'B12'], /--arch: bad architecture/],
    [['--batch-size', '100', '--accum', '3'], /--accum: batch size 100 is not divisible by 3/],
    [['--bogus'], /Unknown option '--bogus'/],
    [['stray'], /Unexpected argument 'stray'/],
  ];
  for (const [args, re] of bad) {
    t.throws(() => parseTrainArgs(args), UsageError, args.join(' '));
    t.throws(() => parseTrainArgs(args), re, args.join(' '));
  }
});

t.test('help', async (t) => {
  t.same(parseTrainArgs(['--help']), { help: true });
  t.same(parseTrainArgs(['-h', '--epochs', '0']), { help: true }, 'help wins over other errors in values');
  for (const flag of [
    '--data',
    '--val',
    '--arch',
    '--epochs',
    '--batch-size',
    '--optimizer',
    '--lr',
    '--weight-decay',
    '--smoothing',
    '--mixup',
    '--no-augment',
    '--out',
    '--backend',
    '--resume',
    '--dry-run',
    '--res',
    '--channels',
    '--num-classes',
    '--warmup',
    '--schedule',
    '--clip',
    '--accum',
    '--checkpoint-every',
    '--seed',
    '--eval-batch-size',
    '--workers',
  ]) {
    t.match(HELP, flag);
  }
});

t.test('trainConfig: library defaults with overrides', async (t) => {
  const o = trainConfig({ out: 'x', batchSize: 32 });
  t.equal(o.evalBatchSize, 32);
  t.equal(o.optimizer, 'lion');
});
