// The eval command: --help, usage errors (exit 2), a missing checkpoint and data that does not
// fit the model (exit 1, also through the real entry point), and the whole path on a tiny
// sharded dataset with ring-backed loaders: centre-crop metrics, --tta N against views read and
// averaged here, --real against counts made here, --out.
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { loadModel, saveModel } from '../../src/model/checkpoint.ts';
import { Mlp } from '../../src/model/mlp.ts';
import { Loader, type LoaderOptions } from '../../src/pipeline/loader/loader.ts';
import { EXIT } from '../../src/cli/command.ts';
import { EVAL_HELP, parseEvalArgs, runEvalCli } from '../../src/cli/eval-main.ts';
import { openEvalFeed, type OpenEvalFeed } from '../../src/cli/feeds.ts';
import { MemoryFeed, syntheticArrays } from '../../src/train/memory-feed.ts';
import { overwriteMemberData } from '../helpers/damage-shards.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from '../model/setup.ts';
import { captureIo, makeShards, runEntry } from './helpers.ts';

await useBackend('cpu');

const root = tempDir(t);
const CK = join(root, 'ck');
const model0 = new Mlp({ arch: 'B_1-Wi_16', res: 8, channels: 3, numClasses: 4 }, 12);
saveModel(CK, model0);
model0.dispose();
const DATA = await makeShards(join(root, 'ds'), { count: 40, numClasses: 4, res: 6, seed: 2 });

const noFeed: OpenEvalFeed = async () => {
  throw new Error('no feed expected');
};
const memFeed =
  (channels: number, numClasses: number): OpenEvalFeed =>
  async (o) => {
    const { images, labels } = syntheticArrays(10, channels, o.res, numClasses, 1);
    return new MemoryFeed({ images, labels, channels, res: o.res, numClasses, batchSize: o.batchSize });
  };

t.test('--help and option parsing', async (t) => {
  const c = captureIo();
  t.equal(await runEvalCli(['--help'], noFeed, c), EXIT.ok);
  t.equal(c.out.join(''), EVAL_HELP);
  for (const re of [
    /^Usage: eval --checkpoint <model> --data <index.json>/,
    /--tta N/,
    /--real <real.json>/,
    /--no-shuffle/,
    /real\[K\]/,
    /--crop-scale LO,HI .*\(0\.4,1/,
    /--out <file.json>/,
  ])
    t.match(EVAL_HELP, re);
  const p = parseEvalArgs(['--checkpoint', 'c', '--data', 'd']);
  if (p.help) throw new Error('unexpected help');
  t.match(p.options, { batchSize: 1024, tta: 0, seed: 0, crop: { scale: [0.4, 1], ratio: [1, 1] }, backend: 'auto' });
});

t.test('usage errors exit 2', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--data', 'd'], /--checkpoint: required/],
    [['--checkpoint', CK], /--data: required/],
    [['--checkpoint', CK, '--data', 'd', '--tta=-1'], /--tta: must be a non-negative integer/],
    [['--checkpoint', CK, '--data', 'd', '--tta', 'many'], /--tta: not a number/],
    [['--checkpoint', CK, '--data', 'd', '--crop-ratio', '2,1'], /--crop-ratio: need 0 < LO <= HI/],
    [['--checkpoint', CK, '--data', 'd', '--frobnicate'], /Unknown option/],
  ];
  for (const [args, re] of cases) {
    const c = captureIo();
    t.equal(await runEvalCli(args, noFeed, c), EXIT.usage, args.join(' '));
    t.match(c.err.join(''), re);
  }
});

t.test('exit 1: missing checkpoint, other channels, other classes, bad ReaL file, ReaL without keys', async (t) => {
  const run = async (args: string[], feed: OpenEvalFeed, re: RegExp): Promise<void> => {
    const c = captureIo();
    t.equal(await runEvalCli([...args, '--backend', 'cpu'], feed, c), EXIT.failure, args.join(' '));
    t.match(c.err.join(''), re);
    t.equal(c.out.join(''), '', 'no result line');
  };
  await run(['--checkpoint', join(root, 'nope'), '--data', DATA], noFeed, /eval: CheckpointError: .*nope: no such file or directory/);
  await run(['--checkpoint', CK, '--data', 'gray'], memFeed(1, 4), /eval: EvalError: channels: the model takes 3-channel images, gray has 1 channels/);
  await run(['--checkpoint', CK, '--data', 'ten'], memFeed(3, 10), /EvalError: classes: the model has 4 classes, ten has 10/);
  const bad = join(root, 'bad-real.json');
  writeFileSync(bad, '{"not": "a list"}');
  await run(['--checkpoint', CK, '--data', DATA, '--real', bad], noFeed, /must be a JSON list/);
  const ok = join(root, 'ok-real.json');
  writeFileSync(ok, JSON.stringify(Array.from({ length: 10 }, () => [0])));
  await run(['--checkpoint', CK, '--data', 'mem', '--real', ok], memFeed(3, 4), /--real: the data feed gave no sample keys/);
});

/** Softmax in float64. */
function softmax(z: ArrayLike<number>): number[] {
  const m = Math.max(...Array.from(z));
  const e = Array.from(z, (v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

/** Logits of every sample of one epoch of a loader, with keys and labels, computed here. */
async function readEpoch(o: LoaderOptions, epoch: number, model: Mlp): Promise<{ keys: string[]; labels: number[]; logits: number[][] }> {
  const loader = await Loader.open(o);
  const keys: string[] = [];
  const labels: number[] = [];
  const logits: number[][] = [];
  try {
    for await (const b of loader.epoch(epoch)) {
      const z = tf.tidy(() => model.forward(tf.tensor2d(b.images.slice(), [b.n, model.inputDim])).arraySync());
      keys.push(...b.keys);
      labels.push(...b.labels);
      logits.push(...z);
      b.release();
    }
  } finally {
    await loader.close();
  }
  return { keys, labels, logits };
}

const argmax = (v: number[]): number => v.reduce((best, x, i) => (x > v[best]! ? i : best), 0);
const hitsAt = (rows: number[][], labels: number[], k: number): number =>
  rows.filter((r, i) =>
    r
      .map((p, c) => [p, c] as const)
      .sort((a, b) => b[0] - a[0] || a[1] - b[1])
      .slice(0, k)
      .some(([, c]) => c === labels[i]),
  ).length;

t.test('end to end on shards: centre crop, --tta 3 and --real match what is computed here', async (t) => {
  const model = loadModel(CK);
  t.teardown(() => model.dispose());
  const base: LoaderOptions = { data: DATA, batchSize: 16, mode: 'eval', res: 8, workers: 1, seed: 0 };
  const centre = await readEpoch({ ...base, transform: 'eval' }, 0, model);
  t.equal(centre.keys.length, 40);
  const centrePred = centre.logits.map(argmax);

  // ReaL labels by position: K%3 == 0 -> [the centre prediction] (right), 1 -> [] (left out),
  // 2 -> [another class] (wrong). Keys are positions 0..39.
  const real: number[][] = Array.from({ length: 40 }, () => []);
  centre.keys.forEach((k, i) => {
    const K = Number(k);
    real[K] = K % 3 === 0 ? [centrePred[i]!] : K % 3 === 1 ? [] : [(centrePred[i]! + 1) % 4];
  });
  const realPath = join(root, 'real.json');
  writeFileSync(realPath, JSON.stringify(real));

  const views = 3;
  const viewOpts: LoaderOptions = { ...base, transform: 'train', augment: { scale: [0.4, 1], ratio: [1, 1], flip: true } };
  const mean: number[][] = Array.from({ length: 40 }, () => [0, 0, 0, 0]);
  let differs = false;
  for (let v = 0; v < views; v++) {
    const r = await readEpoch(viewOpts, v, model);
    t.same(r.keys, centre.keys, `view ${v}: same samples in the same order`);
    r.logits.forEach((z, i) => {
      softmax(z).forEach((p, c) => (mean[i]![c]! += p / views));
      if (z.some((x, c) => x !== centre.logits[i]![c])) differs = true;
    });
  }
  t.ok(differs, 'the views are not the centre crop');

  const outFile = join(root, 'result.json');
  const c = captureIo();
  const code = await runEvalCli(
    [
      '--checkpoint',
      CK,
      '--data',
      DATA,
      '--batch-size',
      '16',
      '--tta',
      String(views),
      '--real',
      realPath,
      '--out',
      outFile,
      '--workers',
      '1',
      '--backend',
      'cpu',
    ],
    openEvalFeed,
    c,
  );
  t.equal(code, EXIT.ok, c.err.join(''));
  const outLines = c.out.join('').trim().split('\n');
  t.equal(outLines.length, 1, 'one JSON line on stdout');
  const r = JSON.parse(outLines[0]!) as Record<string, any>;
  t.same(JSON.parse(readFileSync(outFile, 'utf8')), r, '--out holds the same result');

  const labels = centre.labels;
  let nll = 0;
  centre.logits.forEach((z, i) => (nll -= Math.log(softmax(z)[labels[i]!]!)));
  t.match(r, { type: 'eval', samples: 40, arch: 'B_1-Wi_16', res: 8, channels: 3, num_classes: 4 });
  t.equal(r['top1'], Math.round(((100 * hitsAt(centre.logits, labels, 1)) / 40) * 1e4) / 1e4, 'centre top-1');
  t.equal(r['top5'], 100, '4 classes: top-5 always hits');
  t.ok(Math.abs(r['loss'] - nll / 40) < 1e-5, `centre loss ${r['loss']} vs ${nll / 40}`);
  t.same(
    r['real'],
    { labels: realPath, top1: Math.round(((100 * 14) / 27) * 1e4) / 1e4, right: 14, wrong: 13, left_out: 13, scored: 27 },
    'ReaL counts: K%3 = 0 right, 1 left out, 2 wrong',
  );

  const tta = r['tta'] as Record<string, any>;
  t.match(tta, { views: 3, crop_scale: [0.4, 1], crop_ratio: [1, 1], flip: true, seed: 0 });
  t.equal(tta['top1'], Math.round(((100 * hitsAt(mean, labels, 1)) / 40) * 1e4) / 1e4, 'TTA top-1 of the averaged probabilities');
  t.equal(tta['top5'], 100);
  let ttaNll = 0;
  mean.forEach((row, i) => (ttaNll -= Math.log(row[labels[i]!]!)));
  t.ok(Math.abs(tta['loss'] - ttaNll / 40) < 1e-5, `TTA loss ${tta['loss']} vs ${ttaNll / 40}`);
  const ttaPred = mean.map(argmax);
  let right = 0;
  let wrong = 0;
  let left = 0;
  centre.keys.forEach((k, i) => {
    const l = real[Number(k)]!;
    if (l.length === 0) left++;
    else if (l.includes(ttaPred[i]!)) right++;
    else wrong++;
  });
  t.match(tta['real'], { right, wrong, left_out: left, scored: right + wrong });
  t.match(
    c.err.join(''),
    /centre crop: loss [\d.]+, top-1 [\d.]+%, top-5 100\.00%[\s\S]*ReaL \(centre crop\): top-1 51\.85% \(14 right, 13 wrong of 27; 13 left out[\s\S]*TTA \(3 views[\s\S]*ReaL \(TTA\)/,
  );

  // --in-memory: the shards held in shared memory for the centre crop and the views; same result.
  const m = captureIo();
  const args = ['--checkpoint', CK, '--data', DATA, '--batch-size', '16', '--tta', String(views), '--real', realPath, '--workers', '1', '--backend', 'cpu'];
  t.equal(await runEvalCli([...args, '--in-memory'], openEvalFeed, m), EXIT.ok, m.err.join(''));
  const rm = JSON.parse(m.out.join('')) as Record<string, unknown>;
  for (const k of ['samples', 'loss', 'top1', 'top5', 'real']) t.same(rm[k], r[k], `--in-memory: the same ${k}`);
  t.same({ ...(rm['tta'] as object), seconds: 0 }, { ...tta, seconds: 0 }, '--in-memory: the same TTA result (but its time)');
  t.match(m.err.join(''), /shards into memory: 100% of \d+\.\d MiB/);
});

t.test('the real entry point: --help exits 0; a missing checkpoint and a gray dataset exit 1', async (t) => {
  const dir = tempDir(t);
  const grayData = await makeShards(join(dir, 'gray'), { count: 8, numClasses: 4, res: 8, channels: 1 });
  const [help, missing, channels] = await Promise.all([
    runEntry('eval', ['--help']),
    runEntry('eval', ['--checkpoint', join(dir, 'nope'), '--data', DATA]),
    runEntry('eval', ['--checkpoint', CK, '--data', grayData, '--workers', '1']),
  ]);
  t.equal(help.code, 0);
  t.match(help.stdout, /^Usage: eval/);
  t.equal(missing.code, 1, missing.stderr);
  t.match(missing.stderr, /eval: CheckpointError: .*nope: no such file or directory/);
  t.equal(channels.code, 1, channels.stderr);
  t.match(channels.stderr, /eval: EvalError: channels: the model takes 3-channel images, .*gray\/index.json has 1 channels/);
  t.equal(channels.stdout, '');
});

t.test('replaced (undecodable) images: the result is marked NOT VALID; past --max-corrupt eval fails', async (t) => {
  const ds = join(root, 'damaged');
  cpSync(join(root, 'ds'), ds, { recursive: true });
  // Payloads overwritten, tar headers kept: sizes and the .idx pass, every sample of the first
  // shard fails to decode.
  const shard = join(ds, 'train-000000.tar');
  overwriteMemberData(shard, shard.replace(/\.tar$/, '.idx'), 0x42);
  const args = ['--checkpoint', CK, '--data', join(ds, 'index.json'), '--backend', 'cpu', '--workers', '1', '--batch-size', '16'];
  const c = captureIo();
  t.equal(await runEvalCli([...args, '--max-corrupt', '1000'], openEvalFeed, c), EXIT.ok, c.err.join(''));
  const r = JSON.parse(c.out.join('')) as { valid: boolean; samples: number; replaced: { count: number; first: { shard: string; key: string }[] } };
  t.equal(r.valid, false);
  t.ok(r.replaced.count >= 16, `${r.replaced.count} replaced`);
  t.equal(r.replaced.first[0]!.shard, shard);
  t.match(c.err.join(''), /NOT VALID: \d+ of 40 images could not be decoded and were replaced by others \(first: .*train-000000\.tar#\d{9}: /);
  const strict = captureIo();
  t.equal(await runEvalCli([...args, '--max-corrupt', '3'], openEvalFeed, strict), EXIT.failure);
  t.match(strict.err.join(''), /eval: EvalError: data: \d+ samples could not be decoded and were replaced, more than --max-corrupt 3/);
  t.equal(strict.out.join(''), '', 'no result line');
  const verify = captureIo();
  t.equal(await runEvalCli([...args, '--verify'], openEvalFeed, verify), EXIT.failure);
  t.match(verify.err.join(''), /train-000000\.tar: md5 [0-9a-f]+ does not match/);
  const intact = captureIo();
  t.equal(await runEvalCli(['--checkpoint', CK, '--data', DATA, '--backend', 'cpu', '--workers', '1'], openEvalFeed, intact), EXIT.ok);
  t.equal((JSON.parse(intact.out.join('')) as { valid: boolean }).valid, true);
});
