// The model carries its normalisation: fixed from the training data at the start, recorded in
// config.json, and used by validation during training, `eval` and the PyTorch example, so the
// three report the same top-1 for a pre-trained and a fine-tuned model; an eval on a one-class
// subset scores that subset's images under the model's normalisation, not the subset's own.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { runEvalCli } from '../../src/cli/eval-main.ts';
import { openEvalFeed, openTrainFeeds } from '../../src/cli/feeds.ts';
import { PRETRAIN_AUGMENT } from '../../src/pipeline/augment/settings.ts';
import { runFinetuneCli } from '../../src/cli/finetune-main.ts';
import { runTrainCli } from '../../src/cli/train-main.ts';
import { loadModel, saveModel } from '../../src/model/checkpoint.ts';
import { Mlp } from '../../src/model/mlp.ts';
import { readShard } from '../../src/pipeline/webdataset/open-url.ts';
import { TarWriter } from '../../src/pipeline/webdataset/tar-writer.ts';
import { decodeNpy } from '../../src/pipeline/webdataset/codecs.ts';
import { predict } from '../../src/train/predict.ts';
import { findPython } from '../helpers/python.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from '../model/setup.ts';
import { captureIo, tinyRunFlags, makeShards } from './helpers.ts';

await useBackend('wasm');
const root = tempDir(t);
const TRAIN = await makeShards(join(root, 'train'), { count: 160, numClasses: 4, res: 8, seed: 1 });
const VAL = await makeShards(join(root, 'val'), { count: 64, numClasses: 4, res: 8, seed: 7 });
const FT = await makeShards(join(root, 'ft'), { count: 96, numClasses: 3, res: 8, seed: 4 });
const py = findPython(['torch', 'numpy']);
const EXAMPLE = new URL('../../examples/pytorch/evaluate.py', import.meta.url).pathname;
const COMMON = tinyRunFlags(32);

async function evalTop1(model: string, data: string): Promise<{ top1: number; samples: number }> {
  const c = captureIo();
  t.equal(
    await runEvalCli(
      ['--checkpoint', model, '--data', data, '--batch-size', '32', '--workers', '1', '--backend', 'wasm', '--frame-dtype', 'float32'],
      openEvalFeed,
      c,
    ),
    0,
    c.err.join(''),
  );
  return JSON.parse(c.out.join('')) as { top1: number; samples: number };
}

/** Right answers among `samples`: what the percentages (rounded differently by each report) stand for. */
const hits = (top1: number, samples: number): number => Math.round((top1 * samples) / 100);

/** The PyTorch example's count of right answers. */
function pythonHits(model: string, data: string): number {
  return (JSON.parse(execFileSync(py!, [EXAMPLE, model, data], { encoding: 'utf8', timeout: 120_000 })) as { right: number }).right;
}

function config(dir: string): { preprocessing: { mean: number[]; std: number[]; normalize: string }; classes: string[]; provenance: Record<string, unknown> } {
  return JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
}

const index = (p: string) => JSON.parse(readFileSync(p, 'utf8')) as { mean: number[]; std: number[]; classes: string[] };

t.test('pre-trained: val top-1 during training = eval = PyTorch; config.json records the training statistics', async (t) => {
  const out = join(root, 'pre');
  const c = captureIo();
  const code = await runTrainCli(
    ['--data', TRAIN, '--val', VAL, '--epochs', '3', '--lr', '3e-3', '--out', out, ...COMMON],
    (o) => openTrainFeeds(o, o.res, PRETRAIN_AUGMENT),
    c,
  );
  t.equal(code, 0, c.err.join(''));
  const summary = JSON.parse(c.out.join('')) as { lastEval: { top1: number } };
  const cfg = config(out);
  t.same(cfg.preprocessing.mean, index(TRAIN).mean, "the training index's statistics");
  t.same(cfg.preprocessing.std, index(TRAIN).std);
  t.equal(cfg.preprocessing.normalize, 'dataset');
  t.not(JSON.stringify(index(VAL).mean), JSON.stringify(index(TRAIN).mean), 'the val split has other statistics');
  t.same(cfg.classes, index(TRAIN).classes);
  t.match(cfg.provenance, { dataset: TRAIN, updates: 15, samples_seen: 480, command: /npm run train -- --data / });
  const ev = await evalTop1(out, VAL);
  t.equal(ev.samples, 64);
  t.equal(hits(ev.top1, 64), hits(summary.lastEval.top1, 64), 'eval = the val top-1 printed during training');
  if (py) t.equal(pythonHits(out, VAL), hits(ev.top1, 64), 'the PyTorch example = eval');
  else t.comment('skip PyTorch comparison: no python3 with torch and numpy');

  // --in-memory: train and val shards each loaded (and reported) once; the same model.
  const mem = join(root, 'pre-in-memory');
  const m = captureIo();
  const memCode = await runTrainCli(
    ['--data', TRAIN, '--val', VAL, '--epochs', '3', '--lr', '3e-3', '--out', mem, ...COMMON, '--in-memory'],
    (o) => openTrainFeeds(o, o.res, PRETRAIN_AUGMENT, (line) => m.stderr(`${line}\n`)),
    m,
  );
  t.equal(memCode, 0, m.err.join(''));
  t.equal(m.err.join('').match(/shards into memory: 100% of/g)?.length, 2, 'the training and the validation shards');
  t.ok(readFileSync(join(mem, 'model.safetensors')).equals(readFileSync(join(out, 'model.safetensors'))), 'the same weights, bit for bit');
});

t.test("fine-tuned: the new dataset's statistics, recorded; val top-1 = eval = PyTorch", async (t) => {
  const out = join(root, 'ft-run');
  const c = captureIo();
  const code = await runFinetuneCli(
    [
      '--checkpoint',
      join(root, 'pre'),
      '--mode',
      'full',
      '--data',
      FT,
      '--val',
      FT,
      '--epochs',
      '2',
      '--lr',
      '0.01',
      '--out',
      out,
      ...COMMON.filter((a) => a !== 'B_1-Wi_16' && a !== '--arch'),
    ],
    (o) => openTrainFeeds(o, o.res, o.crop),
    c,
  );
  t.equal(code, 0, c.err.join(''));
  const summary = JSON.parse(c.out.join('')) as { lastEval: { top1: number } };
  t.same(config(out).preprocessing.mean, index(FT).mean, "the fine-tuning set's training statistics");
  t.match(config(out).provenance, { finetuned_from: /pre\/model\.safetensors$/ });
  const ev = await evalTop1(out, FT);
  t.equal(hits(ev.top1, 96), hits(summary.lastEval.top1, 96), 'eval = the val top-1 printed during fine-tuning');
  if (py) t.equal(pythonHits(out, FT), hits(ev.top1, 96), 'the PyTorch example = eval');
});

t.test("a one-class subset is scored under the model's normalisation", async (t) => {
  const model = join(root, 'pre');
  // The subset: every class-0 image of the val split, in its own shard and index, whose own
  // statistics differ from both splits'.
  const dir = join(root, 'subset');
  mkdirSync(dir, { recursive: true });
  const w = new TarWriter(join(dir, 'val-000000.tar'));
  const sums = [0, 0, 0];
  const sq = [0, 0, 0];
  let pixels = 0;
  const keys: string[] = [];
  for (const shard of JSON.parse(readFileSync(VAL, 'utf8')).shardlist as { url: string }[]) {
    for await (const s of readShard(join(root, 'val', shard.url))) {
      if (Number(Buffer.from(s['cls'] as Uint8Array).toString()) !== 0) continue;
      keys.push(s.__key__);
      const img = decodeNpy(s['npy'] as Uint8Array).data as Uint8Array;
      for (let i = 0; i < img.length; i++) {
        sums[i % 3]! += img[i]!;
        sq[i % 3]! += img[i]! * img[i]!;
      }
      pixels += img.length / 3;
      await w.write({ key: s.__key__, members: { cls: s['cls'] as Uint8Array, npy: s['npy'] as Uint8Array } });
    }
  }
  const closed = await w.close();
  const mean = sums.map((x) => x / pixels);
  const std = sq.map((x, c) => Math.sqrt(x / pixels - mean[c]! ** 2));
  const md5 = createHash('md5').update(readFileSync(closed.path)).digest('hex');
  writeFileSync(
    join(dir, 'index.json'),
    JSON.stringify({
      ...JSON.parse(readFileSync(VAL, 'utf8')),
      shardlist: [{ url: 'val-000000.tar', nsamples: keys.length, filesize: closed.size, md5sum: md5 }],
      num_samples: keys.length,
      mean,
      std,
    }),
  );
  t.ok(keys.length > 5, `${keys.length} class-0 images`);

  // The reference: the full val split's predictions under the model's normalisation, restricted to the subset.
  const m = loadModel(model);
  const pre = m.config.preprocessing!.normalization;
  const feed = await openEvalFeed({
    data: VAL,
    batchSize: 32,
    res: 8,
    workers: 1,
    seed: 0,
    views: null,
    frameDtype: 'float32',
    normalize: { mean: pre.mean, std: pre.std },
  });
  const full = await predict(m, feed);
  await feed.close();
  m.dispose();
  const right = full.keys!.filter((k, i) => keys.includes(k) && full.pred[i] === full.labels[i]).length;
  const ev = await evalTop1(join(root, 'pre'), join(dir, 'index.json'));
  t.equal(ev.samples, keys.length);
  t.equal(hits(ev.top1, keys.length), right, "the subset's accuracy under the model's normalisation");
});

t.test('an old model folder (no recorded normalisation) still evaluates, with a warning saying what is assumed', async (t) => {
  const old = join(root, 'old');
  const m = loadModel(join(root, 'pre'));
  const { preprocessing: _p, classes: _c, ...bare } = m.config;
  const plain = new Mlp(bare, 1);
  plain.loadStateDict(m.stateDict(), 'test');
  saveModel(old, plain);
  m.dispose();
  plain.dispose();
  t.notOk('preprocessing' in (JSON.parse(readFileSync(join(old, 'config.json'), 'utf8')) as object));
  const c = captureIo();
  t.equal(await runEvalCli(['--checkpoint', old, '--data', VAL, '--workers', '1', '--backend', 'wasm'], openEvalFeed, c), 0, c.err.join(''));
  t.match(c.err.join(''), /warning: .*old records no input normalisation \(written before it was\); assuming the data's own per-channel statistics/);
  const o = captureIo();
  t.equal(
    await runEvalCli(['--checkpoint', join(root, 'pre'), '--data', VAL, '--workers', '1', '--backend', 'wasm', '--normalize', 'imagenet'], openEvalFeed, o),
    0,
  );
  t.match(o.err.join(''), /note: inputs normalised with the ImageNet statistics \(--normalize\/--mean\/--std\), not the model's recorded normalisation/);
  t.match(JSON.parse(o.out.join('')), { normalize: { from: 'imagenet' } });
});
