// The finetune command: the paper's fine-tuning defaults, --help, usage errors (exit 2), a missing
// checkpoint and data with other channels (exit 1, also through the real entry point), a run on
// in-memory feeds, and one on ring-backed loaders reading a dataset stored below the checkpoint's
// resolution (upscaled to it).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { saveModel } from '../../src/model/checkpoint.ts';
import { Mlp } from '../../src/model/mlp.ts';
import { EXIT } from '../../src/cli/command.ts';
import { FINETUNE_HELP, parseFinetuneArgs, runFinetuneCli, type FinetuneOptions, type MakeFinetuneFeeds } from '../../src/cli/finetune-main.ts';
import { openTrainFeeds } from '../../src/cli/feeds.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from '../model/setup.ts';
import { captureIo, makeShards, runEntry } from './helpers.ts';
import { feedsFor, SHAPE } from '../train/helpers.ts';

await useBackend('wasm');

const root = tempDir(t);
const PRE = join(root, 'pre');
const pre = new Mlp({ arch: 'B_1-Wi_16', res: SHAPE.res, channels: SHAPE.channels, numClasses: 7 }, 3);
saveModel(PRE, pre);
pre.dispose();
const GRAY = join(root, 'gray');
const gray = new Mlp({ arch: 'B_1-Wi_16', res: 8, channels: 1, numClasses: 4 }, 3);
saveModel(GRAY, gray);
gray.dispose();

const noFeeds: MakeFinetuneFeeds = async () => {
  throw new Error('feeds must not be built here');
};

t.test("defaults: the paper's fine-tuning recipe", async (t) => {
  const p = parseFinetuneArgs(['--checkpoint', 'x', '--mode', 'full']);
  if (p.help) throw new Error('unexpected help');
  t.match(p.options, {
    optimizer: 'sgd',
    momentum: 0.9,
    lr: 0.01,
    batchSize: 2048,
    evalBatchSize: 2048,
    epochs: 50,
    smoothing: 0.3,
    clip: 1,
    mixup: 0,
    weightDecay: 0,
    schedule: 'none',
    augment: true,
    finetune: { checkpoint: 'x', mode: 'full', bodyLrMult: 0.1 },
    crop: { scale: [0.4, 1], ratio: [1, 1] },
    outGiven: false,
  });
  const q = parseFinetuneArgs([
    '--checkpoint',
    'x',
    '--mode',
    'full',
    '--body-lr-mult',
    '0.5',
    '--crop-scale',
    '0.2,0.9',
    '--crop-ratio',
    '0.75,1.333',
    '--lr',
    '0.1',
    '--out',
    'o',
  ]);
  if (q.help) throw new Error('unexpected help');
  t.match(q.options, { lr: 0.1, finetune: { bodyLrMult: 0.5 }, crop: { scale: [0.2, 0.9], ratio: [0.75, 1.333] }, outGiven: true, out: 'o' });
});

t.test('--help: usage, the fine-tuning options and their defaults', async (t) => {
  const c = captureIo();
  t.equal(await runFinetuneCli(['--help'], noFeeds, c), EXIT.ok);
  const h = c.out.join('');
  t.equal(h, FINETUNE_HELP);
  t.match(h, /^Usage: finetune --checkpoint <model> --data <index.json> --mode linear\|full/);
  for (const re of [
    /--body-lr-mult X .*\(0\.1\)/,
    /--crop-scale LO,HI .*\(0\.4,1\)/,
    /--crop-ratio LO,HI .*\(1,1\)/,
    /--optimizer NAME .*\(sgd\)/,
    /--lr X +0\.01/,
    /--batch-size N .*\(2048\)/,
    /--epochs N +50/,
    /--clip X .*\(1\)/,
    /--smoothing X .*\(0\.3\)/,
    /--mixup A .*\(0\)/,
    /--resume/,
    /compute_flops/,
  ]) {
    t.match(h, re);
  }
});

t.test('usage errors exit 2 with the reason', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--mode', 'linear', '--data', 'd'], /--checkpoint: required/],
    [['--checkpoint', PRE, '--data', 'd'], /--mode: required: linear or full/],
    [['--checkpoint', PRE, '--mode', 'half', '--data', 'd'], /--mode: expected one of linear, full, got half/],
    [['--checkpoint', PRE, '--mode', 'linear', '--body-lr-mult', '0.2', '--data', 'd'], /--body-lr-mult: applies to --mode full only/],
    [['--checkpoint', PRE, '--mode', 'full', '--crop-scale', '0.5', '--data', 'd'], /--crop-scale: expected two numbers LO,HI/],
    [['--checkpoint', PRE, '--mode', 'full', '--crop-scale', '0.5,1.5', '--data', 'd'], /--crop-scale: need 0 < LO <= HI <= 1/],
    [['--checkpoint', PRE, '--mode', 'full'], /--data is required/],
    [['--checkpoint', PRE, '--mode', 'full', '--data', 'd', '--res', '8'], /--res 8: the checkpoint takes 4x4 images/],
    [['--checkpoint', PRE, '--mode', 'full', '--data', 'd', '--arch', 'B_2-Wi_16'], /--arch B_2-Wi_16: the checkpoint is B_1-Wi_16/],
    [['--checkpoint', PRE, '--mode', 'full', '--data', 'd', '--bogus'], /Unknown option '--bogus'/],
  ];
  for (const [args, re] of cases) {
    const c = captureIo();
    t.equal(await runFinetuneCli(args, noFeeds, c), EXIT.usage, args.join(' '));
    t.match(c.err.join(''), re);
  }
});

t.test('a missing checkpoint and data with other channels exit 1, naming the problem', async (t) => {
  const c = captureIo();
  t.equal(await runFinetuneCli(['--checkpoint', join(root, 'nope'), '--mode', 'linear', '--data', 'd'], noFeeds, c), EXIT.failure);
  t.match(c.err.join(''), /^finetune: CheckpointError: .*nope: no such file or directory/m);
  const d = captureIo();
  const out = tempDir(t);
  const args = ['--checkpoint', PRE, '--mode', 'linear', '--data', 'mem', '--out', out, '--backend', 'wasm', '--batch-size', '16', '--quiet'];
  // The checkpoint takes 3 channels; these feeds deliver gray images of the same size.
  const grayFeeds: MakeFinetuneFeeds = async (o) => {
    const f = feedsFor(o);
    const info = { ...f.train.info, channels: 1 };
    return { train: { info, stepsPerEpoch: () => f.train.stepsPerEpoch(), epoch: (e, s) => f.train.epoch(e, s), close: () => f.train.close() } };
  };
  t.equal(await runFinetuneCli(args, grayFeeds, d), EXIT.failure);
  t.match(d.err.join(''), /finetune: TrainError: channels: the checkpoint .*pre takes 3-channel images, the data has 1 channels/);
});

t.test('a run on in-memory feeds: checkpoint resolution handed to the feeds, summary with fine-tuning and compute', async (t) => {
  const out = tempDir(t);
  const c = captureIo();
  let seen: FinetuneOptions | null = null;
  const args = ['--checkpoint', PRE, '--mode', 'full', '--data', 'mem', '--out', out, '--backend', 'wasm', '--batch-size', '16', '--epochs', '2', '--quiet'];
  const code = await runFinetuneCli(args, async (o) => ((seen = o), feedsFor(o)), c);
  t.equal(code, EXIT.ok, c.err.join(''));
  t.match(seen, { res: 4, channels: 3, arch: 'B_1-Wi_16', crop: { scale: [0.4, 1], ratio: [1, 1] } });
  const err = c.err.join('');
  t.match(err, /fine-tuning \(full, body lr x0\.1\) from .*pre\/model\.safetensors: head 7 -> 5 classes/);
  t.match(err, /compute: [\d.e+-]+ PFLOP/);
  const s = JSON.parse(c.out.join('')) as Record<string, unknown>;
  t.match(s, {
    type: 'summary',
    stoppedBy: 'completed',
    globalStep: 12,
    finetune: { mode: 'full', bodyLrMult: 0.1, sourceClasses: 7 },
    computeFlops: 192 * 6 * (48 * 16 + 2 * 16 * 64 + 16 * 5),
  });
  t.match(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')), { num_classes: 5 });
  const again = captureIo();
  t.equal(await runFinetuneCli(args, async (o) => feedsFor(o), again), EXIT.usage, 'refuses to overwrite a run');
  const dry = captureIo();
  t.equal(await runFinetuneCli(['--checkpoint', PRE, '--mode', 'linear', '--dry-run'], noFeeds, dry), EXIT.ok);
  t.match(JSON.parse(dry.out.join('')), { arch: 'B_1-Wi_16', res: 4, channels: 3, num_classes: 7, mode: 'linear' });
});

t.test("ring-backed loaders: a 6x6 dataset read at the checkpoint's 8x8, linear probe end to end", async (t) => {
  const dir = tempDir(t);
  const data = await makeShards(join(dir, 'ds'), { count: 48, numClasses: 3, res: 6 });
  const ck = join(dir, 'ck');
  const m = new Mlp({ arch: 'B_1-Wi_16', res: 8, channels: 3, numClasses: 4 }, 1);
  saveModel(ck, m);
  m.dispose();
  const out = join(dir, 'ft');
  const c = captureIo();
  const lines: string[] = [];
  const code = await runFinetuneCli(
    [
      '--checkpoint',
      ck,
      '--mode',
      'linear',
      '--data',
      data,
      '--val',
      data,
      '--out',
      out,
      '--batch-size',
      '16',
      '--epochs',
      '2',
      '--workers',
      '1',
      '--backend',
      'wasm',
      '--quiet',
    ],
    (o) => openTrainFeeds(o, o.res!, o.crop, (l) => lines.push(l)),
    c,
  );
  t.equal(code, EXIT.ok, c.err.join(''));
  t.match(lines.join('\n'), /train batches of 16 at 3x8x8/, 'the loader upscales to the checkpoint resolution');
  t.match(JSON.parse(c.out.join('')), { globalStep: 6, finetune: { mode: 'linear', sourceClasses: 4 }, lastEval: { samples: 48 } });
  t.match(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')), { res: 8, channels: 3, num_classes: 3 });
});

t.test('the real entry point: --help exits 0, a missing checkpoint and a gray dataset exit 1', async (t) => {
  const dir = tempDir(t);
  const grayData = await makeShards(join(dir, 'gray'), { count: 16, numClasses: 2, res: 8, channels: 1 });
  const [help, missing, channels] = await Promise.all([
    runEntry('finetune', ['--help']),
    runEntry('finetune', ['--checkpoint', join(dir, 'nope'), '--mode', 'linear', '--data', grayData]),
    runEntry('finetune', [
      '--checkpoint',
      PRE,
      '--mode',
      'linear',
      '--data',
      grayData,
      '--out',
      join(dir, 'o'),
      '--batch-size',
      '8',
      '--workers',
      '1',
      '--quiet',
    ]),
  ]);
  t.equal(help.code, 0);
  t.match(help.stdout, /^Usage: finetune/);
  t.equal(missing.code, 1, missing.stderr);
  t.match(missing.stderr, /CheckpointError: .*nope: no such file or directory/);
  t.equal(channels.code, 1, channels.stderr);
  t.match(channels.stderr, /channels: the checkpoint .*pre takes 3-channel images, the data has 1 channels/);
  t.notOk(channels.stdout.includes('"summary"'));
});
