// PyTorch -> ours -> PyTorch: models built and torch.save'd by PyTorch (plain, under a checkpoint
// key, DataParallel / torch.compile prefixes, float16 / bfloat16 / float64, transposed views) go
// through importTorchCheckpoint; PyTorch loads our safetensors back with strict=True and gives the
// same logits, and so does our tfjs model. Skipped without python3 + torch + numpy.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { loadModel } from '../../../src/model/checkpoint.ts';
import { readSafetensorsFile } from '../../../src/model/safetensors.ts';
import { importTorchCheckpoint } from '../../../src/model/torch-import/import.ts';
import { findPython, runPython } from '../../helpers/python.ts';
import { tempDir } from '../../helpers/tmp.ts';
import { maxAbsDiff, useBackend } from '../setup.ts';

const py = findPython(['torch', 'numpy']);
const script = fileURLToPath(new URL('./torch_roundtrip.py', import.meta.url));
const run = (args: string[]): void => {
  runPython(py!, `import runpy, sys; sys.argv = ${JSON.stringify([script])} + sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")`, args);
};

interface Case {
  name: string;
  arch: string;
  res: number;
  channels: number;
  classes: number;
  seed: number;
  wrap?: 'plain' | 'dataparallel' | 'compiled';
  dtype?: 'float32' | 'float16' | 'bfloat16' | 'float64';
  transpose?: boolean;
  checkpoint?: string;
  /** What to tell the importer; the rest is inferred. */
  given: { arch?: string; res?: number; channels?: number; numClasses?: number };
  at: string;
  stripped: string[];
}

const CASES: Case[] = [
  { name: 'plain', arch: 'B_2-Wi_16', res: 4, channels: 3, classes: 7, seed: 1, given: {}, at: 'top level', stripped: [] },
  { name: 'paper_flags', arch: 'B_3-Wi_8', res: 6, channels: 3, classes: 10, seed: 2, given: { arch: 'B_3-Wi_8', res: 6 }, at: 'top level', stripped: [] },
  {
    name: 'standard_compiled',
    arch: 'S_3-Wi_8',
    res: 3,
    channels: 2,
    classes: 4,
    seed: 3,
    wrap: 'compiled',
    checkpoint: 'model_state_dict',
    given: { channels: 2 },
    at: '"model_state_dict"',
    stripped: ['module.', '_orig_mod.'],
  },
  {
    name: 'bf16_dataparallel',
    arch: 'B_1-Wi_8-Ex_2',
    res: 5,
    channels: 1,
    classes: 3,
    seed: 4,
    wrap: 'dataparallel',
    dtype: 'bfloat16',
    checkpoint: 'state_dict',
    given: { res: 5 },
    at: '"state_dict"',
    stripped: ['module.'],
  },
  {
    name: 'f16_transposed',
    arch: 'B_2-Wi_16',
    res: 4,
    channels: 3,
    classes: 7,
    seed: 5,
    dtype: 'float16',
    transpose: true,
    checkpoint: 'model',
    given: {},
    at: '"model"',
    stripped: [],
  },
  { name: 'f64', arch: 'B_1-Wi_16', res: 2, channels: 3, classes: 2, seed: 6, dtype: 'float64', given: { numClasses: 2 }, at: 'top level', stripped: [] },
];

t.test('PyTorch -> ours -> PyTorch round trip', { skip: py ? false : 'python3 with torch and numpy not found (apt-get install python3-torch)' }, async (t) => {
  await useBackend('cpu');
  const dir = tempDir(t);
  const cases = join(dir, 'cases.json');
  writeFileSync(cases, JSON.stringify(CASES));
  run(['save', dir, cases]);
  for (const c of CASES) {
    const r = importTorchCheckpoint({ input: join(dir, `${c.name}.pt`), out: join(dir, c.name), ...c.given });
    t.match(
      r.config,
      { arch: c.arch, res: c.res, channels: c.channels, numClasses: c.classes, preprocessing: { normalization: { source: 'imagenet' } } },
      `${c.name}: model`,
    );
    t.equal(r.at, c.at, `${c.name}: state dict at ${c.at}`);
    t.same(r.stripped.sort(), [...c.stripped].sort(), `${c.name}: prefixes stripped`);
    t.same(Object.keys(r.dtypes), [c.dtype ?? 'float32'], `${c.name}: dtype`);
  }
  run(['check', dir, cases]);
  for (const c of CASES) {
    const ref = readSafetensorsFile(join(dir, `${c.name}.ref.safetensors`)).tensors;
    const back = readSafetensorsFile(join(dir, `${c.name}.back.safetensors`)).tensors.get('logits')!;
    const logits = ref.get('logits')!;
    const torchDiff = maxAbsDiff(back.data, logits.data);
    t.ok(torchDiff < 1e-5, `${c.name}: PyTorch logits after the round trip (max diff ${torchDiff})`);
    const model = loadModel(join(dir, c.name));
    const x = ref.get('x')!;
    const ours = tf.tidy(() => model.forward(tf.tensor2d(x.data, x.shape as [number, number])).dataSync());
    const tfDiff = maxAbsDiff(ours, logits.data);
    t.ok(tfDiff < 1e-5, `${c.name}: our tfjs logits vs PyTorch (max diff ${tfDiff.toExponential(2)})`);
    model.dispose();
  }
});
