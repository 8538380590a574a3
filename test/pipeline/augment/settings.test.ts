// The one augmentation settings type: its defaults, its validation, and the loader refusing
// unusable settings before it starts a thread.
import { join } from 'node:path';
import t from 'tap';
import { AugmentSettingsError, checkAugment, FINETUNE_AUGMENT, PRETRAIN_AUGMENT, ratioProblem, scaleProblem } from '../../../src/pipeline/augment/settings.ts';
import { Loader } from '../../../src/pipeline/loader/loader.ts';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../../src/pipeline/sources/synthetic.ts';
import { tempDir } from '../../helpers/tmp.ts';

t.test('defaults: torchvision RandomResizedCrop for pre-training, the paper fine-tuning crops', async (t) => {
  t.same(PRETRAIN_AUGMENT, { scale: [0.08, 1], ratio: [3 / 4, 4 / 3], flip: true });
  t.same(FINETUNE_AUGMENT, { scale: [0.4, 1], ratio: [1, 1], flip: true });
  t.equal(checkAugment(PRETRAIN_AUGMENT), PRETRAIN_AUGMENT);
  t.equal(checkAugment(FINETUNE_AUGMENT), FINETUNE_AUGMENT);
});

t.test('range checks: scale in (0, 1], ratio positive, LO <= HI', async (t) => {
  t.equal(scaleProblem(0.08, 1), null);
  t.equal(scaleProblem(1, 1), null);
  for (const [lo, hi] of [
    [0, 1],
    [0.5, 0.4],
    [0.5, 1.01],
    [Number.NaN, 1],
  ])
    t.equal(scaleProblem(lo!, hi!), 'need 0 < LO <= HI <= 1', `scale ${lo},${hi}`);
  t.equal(ratioProblem(0.75, 4 / 3), null);
  t.equal(ratioProblem(2, 5), null, 'a ratio may exceed 1');
  for (const [lo, hi] of [
    [0, 1],
    [-1, 1],
    [2, 1],
  ])
    t.equal(ratioProblem(lo!, hi!), 'need 0 < LO <= HI', `ratio ${lo},${hi}`);
});

t.test('checkAugment names the field', async (t) => {
  t.throws(() => checkAugment({ ...PRETRAIN_AUGMENT, scale: [0.5, 2] }), {
    name: 'AugmentSettingsError',
    field: 'scale',
    message: /augment\.scale: need 0 < LO <= HI <= 1, got \[0\.5,2\]/,
  });
  t.throws(() => checkAugment({ ...PRETRAIN_AUGMENT, ratio: [1, 0.5] }), { name: 'AugmentSettingsError', field: 'ratio' });
  t.throws(() => checkAugment({ ...PRETRAIN_AUGMENT, scale: [0.5] as unknown as [number, number] }), {
    name: 'AugmentSettingsError',
    field: 'scale',
    message: /two numbers/,
  });
  t.throws(() => checkAugment({ ...PRETRAIN_AUGMENT, flip: 'yes' as unknown as boolean }), { name: 'AugmentSettingsError', field: 'flip' });
  t.type(new AugmentSettingsError('scale', 'x'), Error);
});

t.test('Loader.open refuses unusable settings, accepts the defaults', async (t) => {
  const dir = tempDir(t);
  const data = join(dir, 'ds');
  await runShardJob(openSynthetic({ count: 8, numClasses: 2, width: 8, height: 8, seed: 1 }), {
    out: data,
    res: 8,
    resize: 'max-side',
    encoding: 'raw',
    quality: 90,
    samplesPerShard: 8,
    workers: 1,
    seed: 1,
    split: 'train',
    valFraction: 0,
    command: 't',
  });
  await t.rejects(Loader.open({ data, batchSize: 4, mode: 'train', workers: 1, augment: { scale: [0.9, 0.1], ratio: [1, 1], flip: true } }), {
    name: 'AugmentSettingsError',
    field: 'scale',
  });
  const loader = await Loader.open({ data, batchSize: 4, mode: 'train', workers: 1 });
  t.teardown(() => loader.close());
  let batches = 0;
  for await (const b of loader.epoch(0)) {
    batches++;
    b.release();
  }
  t.equal(batches, 2);
});
