// Weights move between this project and PyTorch: our checkpoint loads into PyTorch modules with
// the reference's names (strict), gives the same logits, loss (label smoothing) and gradients;
// a PyTorch-initialised model loads here and gives the same logits. Skipped without torch.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { loadModel, saveModel } from '../../src/model/checkpoint.ts';
import { Mlp, transpose2d } from '../../src/model/mlp.ts';
import { readSafetensorsFile } from '../../src/model/safetensors.ts';
import { batchLoss } from '../../src/train/loss.ts';
import { findPython, runPython } from '../helpers/python.ts';
import { tempDir } from '../helpers/tmp.ts';
import { maxAbsDiff, useBackend } from './setup.ts';

const py = findPython(['torch', 'numpy']);
const script = fileURLToPath(new URL('./torch_interop.py', import.meta.url));
const run = (args: string[]): void => {
  runPython(py!, `import runpy, sys; sys.argv = ${JSON.stringify([script])} + sys.argv[1:]; runpy.run_path(sys.argv[0], run_name="__main__")`, args);
};

function rand(n: number, seed: number): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) * 4 - 2);
}

t.test('PyTorch interop', { skip: py ? false : 'python3 with torch and numpy not found (apt-get install python3-torch)' }, async (t) => {
  await useBackend('cpu');
  for (const arch of ['B_2-Wi_8', 'S_3-Wi_8', 'B_1-Wi_4-Ex_2']) {
    t.test(`${arch}: our checkpoint in PyTorch - logits, smoothed loss, gradients`, async (t) => {
      const dir = tempDir(t);
      const shape = { res: 3, channels: 2, numClasses: 4 };
      const model = new Mlp({ arch, ...shape }, 5);
      saveModel(dir, model);
      const n = 6;
      const x = rand(n * 18, 1);
      const labels = Int32Array.from([0, 3, 1, 2, 2, 0]);
      writeFileSync(join(dir, 'x.f32'), x);
      writeFileSync(join(dir, 'y.i32'), labels);
      run(['check', dir, join(dir, 'x.f32'), join(dir, 'y.i32'), '0.3']);
      const theirs = readSafetensorsFile(join(dir, 'torch_out.safetensors')).tensors;

      const { value, grads, logits } = tf.tidy(() => {
        const xt = tf.tensor2d(x, [n, 18]);
        let z: tf.Tensor2D | null = null;
        const r = tf.variableGrads(() => {
          z = tf.keep(model.forward(xt));
          return batchLoss(z, tf.tensor1d(labels, 'int32'), 0.3);
        }, model.variables());
        return { ...r, logits: z! as tf.Tensor2D };
      });
      t.ok(maxAbsDiff(logits.dataSync(), theirs.get('logits')!.data) < 1e-5, 'logits');
      t.ok(Math.abs(value.dataSync()[0]! - theirs.get('loss')!.data[0]!) < 1e-6, 'loss with label smoothing 0.3');
      let worst = 0;
      for (const p of model.params) {
        const g = grads[p.variable.name]!.dataSync() as Float32Array;
        const mine = p.entry.role === 'linear.weight' ? transpose2d(g, p.tfShape[0]!, p.tfShape[1]!) : g;
        const ref = theirs.get(`grad.${p.entry.name}`);
        t.ok(ref, `PyTorch has ${p.entry.name}`);
        worst = Math.max(worst, maxAbsDiff(mine, ref!.data));
      }
      t.ok(worst < 1e-5, `gradients: max diff ${worst}`);
      tf.dispose([value, logits]);
      tf.dispose(grads);
      model.dispose();
    });
  }

  t.test('a PyTorch-initialised model loads here and gives the same logits', async (t) => {
    const dir = tempDir(t);
    const x = rand(5 * 27, 2);
    writeFileSync(join(dir, 'x.f32'), x);
    const mdir = join(dir, 'm');
    run(['make', mdir, 'B_2-Wi_16', '3', '3', '7', '123', join(dir, 'x.f32')]);
    const model = loadModel(mdir);
    const logits = tf.tidy(() => model.forward(tf.tensor2d(x, [5, 27])).dataSync());
    t.ok(maxAbsDiff(logits, readSafetensorsFile(join(mdir, 'torch_logits.safetensors')).tensors.get('logits')!.data) < 1e-5);
    model.dispose();
  });
});
