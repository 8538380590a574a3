import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { atomicWriteFile } from '../../src/shared/atomic-write.ts';
import { CONFIG_FILE, loadModel, MODEL_FILE, saveModel } from '../../src/model/checkpoint.ts';
import { CheckpointError } from '../../src/model/errors.ts';
import { Mlp } from '../../src/model/mlp.ts';
import { readSafetensorsFile } from '../../src/model/safetensors.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from './setup.ts';

await useBackend('cpu');

t.test('saveModel / loadModel round trip with the reference names and a config', async (t) => {
  const dir = tempDir(t);
  const m = new Mlp({ arch: 'B_2-Wi_8', res: 4, channels: 3, numClasses: 5 }, 42);
  saveModel(dir, m);
  t.same(readdirSync(dir).sort(), [CONFIG_FILE, MODEL_FILE], 'no temporary files left behind');
  const cfg = JSON.parse(readFileSync(join(dir, CONFIG_FILE), 'utf8'));
  t.match(cfg, { arch: 'B_2-Wi_8', model: 'BottleneckMLP', res: 4, channels: 3, num_classes: 5, input_dim: 48, input_layout: 'CHW' });
  const file = readSafetensorsFile(join(dir, MODEL_FILE));
  t.same(
    [...file.tensors.keys()],
    m.params.map((p) => p.entry.name),
  );
  t.same(file.tensors.get('blocks.1.block.0.weight')!.shape, [32, 8]);
  t.equal(file.metadata['format'], 'pt');

  const back = loadModel(dir);
  t.equal(back.spec.name, 'B_2-Wi_8');
  const x = tf.randomNormal([3, 48]) as tf.Tensor2D;
  t.same(Array.from(back.forward(x).dataSync()), Array.from(m.forward(x).dataSync()), 'same outputs');
  m.dispose();
  back.dispose();
});

t.test('loadModel errors say which file and why', async (t) => {
  const dir = tempDir(t);
  t.throws(() => loadModel(dir), CheckpointError);
  const m = new Mlp({ arch: 'S_2-Wi_4', res: 1, channels: 2, numClasses: 3 });
  saveModel(dir, m);
  m.dispose();
  const cfg = JSON.parse(readFileSync(join(dir, CONFIG_FILE), 'utf8'));
  writeFileSync(join(dir, CONFIG_FILE), JSON.stringify({ ...cfg, arch: 'S_3-Wi_4' }));
  t.throws(() => loadModel(dir), /missing \[layers\.1\.weight/);
  writeFileSync(join(dir, CONFIG_FILE), JSON.stringify({ ...cfg, num_classes: 0 }));
  t.throws(() => loadModel(dir), /num_classes must be a positive integer/);
});

t.test('atomicWriteFile replaces whole files and leaves no temporaries', async (t) => {
  const dir = tempDir(t);
  const p = join(dir, 'x.json');
  atomicWriteFile(p, 'one');
  atomicWriteFile(p, 'two');
  t.equal(readFileSync(p, 'utf8'), 'two');
  t.same(readdirSync(dir), ['x.json']);
  t.throws(() => atomicWriteFile(join(dir, 'missing', 'y'), 'z'));
  t.same(readdirSync(dir), ['x.json']);
});
