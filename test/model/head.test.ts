// Fine-tuning's head swap: the body comes from the checkpoint bit for bit, linear_out is a new
// [classes, width] Linear with PyTorch's default init drawn from a seed of its own; and the
// body/head split of the forward pass that linear probing relies on.
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { CheckpointError } from '../../src/model/errors.ts';
import { HEAD_PARAMS, headSeed, isHeadParam, newHeadParams, withNewHead } from '../../src/model/head.ts';
import { initParam } from '../../src/model/init.ts';
import { paramLayout } from '../../src/model/layout.ts';
import { Mlp } from '../../src/model/mlp.ts';
import { parseArch } from '../../src/model/arch.ts';
import { useBackend } from './setup.ts';

await useBackend('cpu');

const CONFIG = { arch: 'B_2-Wi_16', res: 4, channels: 3, numClasses: 7 };

t.test('withNewHead: body identical to the checkpoint, new head shape and seeded PyTorch init', async (t) => {
  const pre = new Mlp(CONFIG, 11);
  const state = pre.stateDict();
  const m = withNewHead(CONFIG, state, 5, 3);
  t.teardown(() => {
    pre.dispose();
    m.dispose();
  });
  t.same(m.config, { ...CONFIG, numClasses: 5, arch: 'B_2-Wi_16' });
  const after = m.stateDict();
  t.same([...after.keys()], [...state.keys()], 'same tensors, same order');
  for (const [name, v] of state) {
    if (isHeadParam(name)) continue;
    t.same(after.get(name)!.shape, v.shape, `${name} shape`);
    t.ok(Buffer.from(after.get(name)!.data.buffer).equals(Buffer.from(v.data.buffer)), `${name} bit-identical`);
  }
  t.same(after.get('linear_out.weight')!.shape, [5, 16], 'weight [classes, width]');
  t.same(after.get('linear_out.bias')!.shape, [5]);

  // Hand-built expectation: the layout entry of the new head, initialised from headSeed(3) at
  // its index in the state-dict order (linear_out.weight is entry 2, .bias entry 3).
  const layout = paramLayout(parseArch(CONFIG.arch), { ...CONFIG, numClasses: 5 });
  t.equal(layout[2]!.name, 'linear_out.weight');
  for (const i of [2, 3]) {
    const e = layout[i]!;
    const want = initParam(e, headSeed(3), i);
    t.same(Array.from(after.get(e.name)!.data), Array.from(want), `${e.name} = U(-1/sqrt(16), 1/sqrt(16)) from headSeed(3)`);
    const v = after.get(e.name)!.data;
    t.ok(
      v.every((x) => Math.abs(x) <= 0.25),
      'inside the nn.Linear bound 1/sqrt(fan_in) = 0.25',
    );
    t.ok(new Set(v).size > v.length / 2, 'not constant');
  }
  t.same(
    [...newHeadParams(CONFIG, 5, 3)].map(([k, v]) => [k, v.shape, Array.from(v.data)]),
    [
      ['linear_out.weight', [5, 16], Array.from(after.get('linear_out.weight')!.data)],
      ['linear_out.bias', [5], Array.from(after.get('linear_out.bias')!.data)],
    ],
  );

  const again = withNewHead(CONFIG, state, 5, 3);
  const other = withNewHead(CONFIG, state, 5, 4);
  t.teardown(() => {
    again.dispose();
    other.dispose();
  });
  t.same(Array.from(again.stateDict().get('linear_out.weight')!.data), Array.from(after.get('linear_out.weight')!.data), 'same seed, same head');
  t.not(
    Array.from(other.stateDict().get('linear_out.weight')!.data).join(),
    Array.from(after.get('linear_out.weight')!.data).join(),
    'another seed, another head',
  );
});

t.test('the new head is not the pre-training init head of the same seed and class count', async (t) => {
  const pre = new Mlp(CONFIG, 0);
  const m = withNewHead(CONFIG, pre.stateDict(), CONFIG.numClasses, 0);
  t.teardown(() => {
    pre.dispose();
    m.dispose();
  });
  t.not(Array.from(m.stateDict().get('linear_out.weight')!.data).join(), Array.from(pre.stateDict().get('linear_out.weight')!.data).join());
});

t.test('withNewHead refuses a body that does not fit', async (t) => {
  const pre = new Mlp({ ...CONFIG, arch: 'B_2-Wi_8' }, 1);
  t.teardown(() => pre.dispose());
  t.throws(() => withNewHead(CONFIG, pre.stateDict(), 5, 0, 'ck'), CheckpointError);
  t.throws(() => withNewHead(CONFIG, pre.stateDict(), 5, 0, 'ck'), /ck: linear_in.weight has shape \[8,48\]/);
  const full = new Mlp(CONFIG, 1);
  t.teardown(() => full.dispose());
  const partial = full.stateDict();
  partial.delete('layernorms.1.bias');
  t.throws(() => withNewHead(CONFIG, partial, 5, 0), /missing \[layernorms.1.bias\]/);
  t.same([...HEAD_PARAMS], ['linear_out.weight', 'linear_out.bias']);
});

t.test('loadStateDict skip: skipped tensors keep their values and may be absent or any shape', async (t) => {
  const a = new Mlp(CONFIG, 1);
  const b = new Mlp(CONFIG, 2);
  t.teardown(() => {
    a.dispose();
    b.dispose();
  });
  const s = a.stateDict();
  s.set('linear_out.weight', { shape: [1, 1], data: new Float32Array(1) });
  s.delete('linear_out.bias');
  const headBefore = b.stateDict().get('linear_out.weight')!.data;
  b.loadStateDict(s, 'x', { skip: HEAD_PARAMS });
  t.same(Array.from(b.stateDict().get('linear_out.weight')!.data), Array.from(headBefore));
  t.same(Array.from(b.stateDict().get('blocks.1.block.2.weight')!.data), Array.from(a.stateDict().get('blocks.1.block.2.weight')!.data));
  t.throws(() => b.loadStateDict(s, 'x'), /unexpected|shape/, 'without skip it is strict');
});

t.test('forward = head(features(x))', async (t) => {
  const m = new Mlp(CONFIG, 5);
  t.teardown(() => m.dispose());
  const x = tf.randomNormal([3, 48], 0, 1, 'float32', 1) as tf.Tensor2D;
  const f = m.features(x);
  t.same(f.shape, [3, 16]);
  t.same(Array.from(m.head(f).dataSync()), Array.from(m.forward(x).dataSync()));
  tf.dispose([x, f]);
});
