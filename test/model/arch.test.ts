import t from 'tap';
import { parseArch } from '../../src/model/arch.ts';
import { ArchError } from '../../src/model/errors.ts';
import { countParams, estimateTrainBytes, forwardMacs, paramLayout, trainFlopsPerSample } from '../../src/model/layout.ts';

const IN21K = { res: 64, channels: 3, numClasses: 11230 };

t.test('names parse to specs, canonically', async (t) => {
  t.same(parseArch('B_12-Wi_1024'), { name: 'B_12-Wi_1024', kind: 'bottleneck', depth: 12, width: 1024, expansion: 4 });
  t.same(parseArch('S_6-Wi_256'), { name: 'S_6-Wi_256', kind: 'standard', depth: 6, width: 256, expansion: 4 });
  t.same(parseArch(' B_2-Wi_64-Ex_2 ').expansion, 2, 'reference -Ex_ suffix');
  t.equal(parseArch('B_03-Wi_064').name, 'B_3-Wi_64');
  t.equal(parseArch('B_0-Wi_8').depth, 0, 'a bottleneck MLP without blocks is linear_in + linear_out');
  for (const bad of ['', 'B12-Wi_1024', 'B_12-W_1024', 'X_1-Wi_2', 'B_1-Wi_0', 'S_0-Wi_8', 'S_2-Wi_8-Ex_2', 'B_-1-Wi_8', 'B_1-Wi_8-Ex_0']) {
    t.throws(() => parseArch(bad), ArchError, bad);
  }
});

t.test("parameter counts equal the paper's table (64x64x3, 11,230 classes)", async (t) => {
  const table: [string, number][] = [
    ['B_6-Wi_256', 9_188_574],
    ['B_12-Wi_256', 12_345_054],
    ['B_6-Wi_512', 24_657_374],
    ['B_12-Wi_512', 37_261_790],
    ['B_6-Wi_1024', 74_469_342],
    ['B_12-Wi_1024', 124_843_998],
  ];
  for (const [arch, params] of table) t.equal(countParams(parseArch(arch), IN21K), params, arch);
});

t.test('count by hand: B_1-Wi_2, input 3, 2 classes; S_3-Wi_4', async (t) => {
  // linear_in 3*2+2, linear_out 2*2+2, block 2*8+8 + 8*2+2, layernorm 2+2
  t.equal(countParams(parseArch('B_1-Wi_2'), { res: 1, channels: 3, numClasses: 2 }), 8 + 6 + 24 + 18 + 4);
  // S_3: the reference builds widths [4, 4, 4] -> 2 hidden Linear(4, 4) with LayerNorm(4) each
  t.equal(countParams(parseArch('S_3-Wi_4'), { res: 1, channels: 3, numClasses: 2 }), 16 + 10 + 2 * 20 + 2 * 8);
});

t.test('state-dict names and shapes follow the reference modules', async (t) => {
  const b = paramLayout(parseArch('B_2-Wi_8'), { res: 2, channels: 3, numClasses: 5 });
  t.same(
    b.map((p) => `${p.name}:${p.shape.join('x')}`),
    [
      'linear_in.weight:8x12',
      'linear_in.bias:8',
      'linear_out.weight:5x8',
      'linear_out.bias:5',
      'blocks.0.block.0.weight:32x8',
      'blocks.0.block.0.bias:32',
      'blocks.0.block.2.weight:8x32',
      'blocks.0.block.2.bias:8',
      'blocks.1.block.0.weight:32x8',
      'blocks.1.block.0.bias:32',
      'blocks.1.block.2.weight:8x32',
      'blocks.1.block.2.bias:8',
      'layernorms.0.weight:8',
      'layernorms.0.bias:8',
      'layernorms.1.weight:8',
      'layernorms.1.bias:8',
    ],
  );
  const s = paramLayout(parseArch('S_3-Wi_8'), { res: 2, channels: 3, numClasses: 5 });
  t.same(
    s.map((p) => p.name),
    [
      'linear_in.weight',
      'linear_in.bias',
      'linear_out.weight',
      'linear_out.bias',
      'layers.0.weight',
      'layers.0.bias',
      'layers.1.weight',
      'layers.1.bias',
      'layernorms.0.weight',
      'layernorms.0.bias',
      'layernorms.1.weight',
      'layernorms.1.bias',
    ],
  );
});

t.test('compute: ~124.7M forward multiply-adds and ~0.75 GFLOP per training sample for B_12-Wi_1024', async (t) => {
  const spec = parseArch('B_12-Wi_1024');
  const macs = forwardMacs(spec, IN21K);
  t.equal(macs, 12288 * 1024 + 12 * 2 * 1024 * 4096 + 1024 * 11230);
  t.equal(trainFlopsPerSample(spec, IN21K), 6 * macs);
  t.ok(Math.abs(macs / 1e6 - 124.7) < 0.1, `${macs}`);
});

t.test('training memory estimate: grows with the batch, paper defaults far beyond wasm32', async (t) => {
  const spec = parseArch('B_12-Wi_1024');
  const a = estimateTrainBytes(spec, IN21K, 1024, 1);
  const b = estimateTrainBytes(spec, IN21K, 2048, 1);
  t.ok(b > a && a > countParams(spec, IN21K) * 12, 'batch and parameter terms');
  t.ok(estimateTrainBytes(spec, IN21K, 16384, 1) > 16 * 2 ** 30, 'batch 16384 needs well over 16 GiB');
});
