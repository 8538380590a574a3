// The commands on a real WebGPU adapter (lavapipe in CI) against wasm: `train --backend webgpu`
// prints the adapter and the GPU memory statement; `finetune` (linear probe and full) ends with
// the weights wasm gives; `eval` with --tta and --real gives wasm's metrics and ReaL counts on
// ring-backed loaders over shards. Skips where no adapter is found.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { saveModel } from '../../src/model/checkpoint.ts';
import { Mlp } from '../../src/model/mlp.ts';
import { readSafetensorsFile } from '../../src/model/safetensors.ts';
import { EXIT } from '../../src/cli/command.ts';
import { runEvalCli } from '../../src/cli/eval-main.ts';
import { openEvalFeed } from '../../src/cli/feeds.ts';
import { runFinetuneCli } from '../../src/cli/finetune-main.ts';
import { runTrainCli, type MakeFeeds } from '../../src/cli/train-main.ts';
import { tempDir } from '../helpers/tmp.ts';
import { probeWebGpu } from '../helpers/webgpu.ts';
import { feedsFor, SHAPE } from '../train/helpers.ts';
import { captureIo, makeShards } from './helpers.ts';

const gpu = await probeWebGpu();
const root = tempDir(t);
const memFeeds: MakeFeeds = async (o) => feedsFor(o);

function weights(dir: string): Map<string, Float32Array> {
  return new Map([...readSafetensorsFile(join(dir, 'model.safetensors')).tensors].map(([k, v]) => [k, v.data]));
}

function worstDiff(a: Map<string, Float32Array>, b: Map<string, Float32Array>): number {
  let worst = a.size === b.size ? 0 : Infinity;
  for (const [k, x] of a) {
    const y = b.get(k);
    if (!y || y.length !== x.length) return Infinity;
    for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
  }
  return worst;
}

t.test('train --backend webgpu: the adapter, the GPU memory statement, a run to the end', { skip: gpu.skip }, async (t) => {
  const c = captureIo();
  const out = join(root, 'train');
  const code = await runTrainCli(
    [
      '--data',
      'mem',
      '--backend',
      'webgpu',
      '--arch',
      'B_1-Wi_16',
      '--epochs',
      '1',
      '--batch-size',
      '16',
      '--optimizer',
      'adamw',
      '--checkpoint-every',
      '2',
      '--out',
      out,
    ],
    memFeeds,
    c,
  );
  const err = c.err.join('');
  t.equal(code, EXIT.ok, err);
  t.match(err, /^backend: webgpu; webgpu: (software|hardware) adapter .*bindings up to/m);
  t.match(err, /webgpu: one step of batch 16 needs ~[\d.]+ KiB of GPU memory \(estimate: WebGPU does not report the device's size\); largest buffer/);
  const summary = JSON.parse(c.out.join('')) as { backend: string; globalStep: number; backend_selection: { backend: string; notes: string[] } };
  t.match(summary, { backend: 'webgpu', globalStep: 6, backend_selection: { backend: 'webgpu' } });
  t.match(summary.backend_selection.notes[0], /^webgpu: (software|hardware) adapter/);
});

const PRE = join(root, 'pre');
const pre = new Mlp({ arch: 'B_1-Wi_16', res: SHAPE.res, channels: SHAPE.channels, numClasses: 7 }, 42);
saveModel(PRE, pre);
pre.dispose();

for (const mode of ['linear', 'full'] as const) {
  t.test(`finetune --mode ${mode} on webgpu ends with wasm's weights`, { skip: gpu.skip }, async (t) => {
    const outs: Record<string, string> = {};
    for (const backend of ['webgpu', 'wasm']) {
      const c = captureIo();
      const out = join(root, `ft-${mode}-${backend}`);
      const code = await runFinetuneCli(
        [
          '--checkpoint',
          PRE,
          '--mode',
          mode,
          '--data',
          'mem',
          '--epochs',
          '1',
          '--batch-size',
          '16',
          '--backend',
          backend,
          '--out',
          out,
          '--checkpoint-every',
          '0',
        ],
        memFeeds,
        c,
      );
      t.equal(code, EXIT.ok, c.err.join(''));
      t.match(c.err.join(''), new RegExp(`^backend: ${backend}`, 'm'));
      outs[backend] = out;
    }
    const d = worstDiff(weights(outs['webgpu']!), weights(outs['wasm']!));
    t.ok(d <= 1e-5, `max weight difference ${d}`);
    const w0 = weights(PRE);
    if (mode === 'linear') {
      // The frozen body is bit-identical to the pre-trained one on either backend.
      const w = weights(outs['webgpu']!);
      t.equal(
        worstDiff(new Map([...w].filter(([k]) => !k.startsWith('linear_out'))), new Map([...w0].filter(([k]) => !k.startsWith('linear_out')))),
        0,
        'body unchanged',
      );
    }
  });
}

t.test("eval --tta 3 --real on shards: webgpu gives wasm's metrics", { skip: gpu.skip }, async (t) => {
  const CK = join(root, 'ck');
  const m = new Mlp({ arch: 'B_1-Wi_16', res: 8, channels: 3, numClasses: 4 }, 12);
  saveModel(CK, m);
  m.dispose();
  const data = await makeShards(join(root, 'ds'), { count: 40, numClasses: 4, res: 6, seed: 2 });
  const realPath = join(root, 'real.json');
  // Keys are positions 0..39: a mix of single, double and missing ReaL labels.
  writeFileSync(realPath, JSON.stringify(Array.from({ length: 40 }, (_, k) => (k % 5 === 4 ? [] : k % 3 === 0 ? [k % 4, (k + 1) % 4] : [k % 4]))));
  const results: Record<string, Record<string, any>> = {};
  for (const backend of ['webgpu', 'wasm']) {
    const c = captureIo();
    const code = await runEvalCli(
      [
        '--checkpoint',
        CK,
        '--data',
        data,
        '--batch-size',
        '16',
        '--tta',
        '3',
        '--real',
        realPath,
        '--workers',
        '1',
        '--backend',
        backend,
        '--frame-dtype',
        'float32',
      ],
      openEvalFeed,
      c,
    );
    t.equal(code, EXIT.ok, c.err.join(''));
    results[backend] = JSON.parse(c.out.join('')) as Record<string, any>;
  }
  const g = results['webgpu']!;
  const w = results['wasm']!;
  t.match(g, { samples: 40, top1: w['top1'], top5: w['top5'], real: w['real'] });
  t.ok(Math.abs(g['loss'] - w['loss']) < 1e-5, `centre loss ${g['loss']} vs ${w['loss']}`);
  t.match(g['tta'], { views: 3, top1: w['tta']['top1'], top5: w['tta']['top5'], real: w['tta']['real'] });
  t.ok(Math.abs(g['tta']['loss'] - w['tta']['loss']) < 1e-5, `TTA loss ${g['tta']['loss']} vs ${w['tta']['loss']}`);
});
