// From torch.save file to our model directory: finding the state dict, stripping wrapper
// prefixes, inferring or checking arch / res / channels / classes from the tensor shapes, clear
// errors for missing, unexpected and mis-shaped tensors, the atomic write, and the CLI. The
// imported fixtures load with loadModel and give PyTorch's logits (stored in expected.json), so
// this runs the whole path on machines without PyTorch.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import t from 'tap';
import { loadModel } from '../../../src/model/checkpoint.ts';
import { readSafetensorsFile } from '../../../src/model/safetensors.ts';
import { TorchImportError } from '../../../src/model/torch-import/errors.ts';
import {
  checkTensors,
  findStateDict,
  importTorchCheckpoint,
  resolveModel,
  shapeEvidence,
  stripWrapperPrefixes,
} from '../../../src/model/torch-import/import.ts';
import { parseImportArgs, runImportCli } from '../../../src/cli/import-main.ts';
import { PyDict, type PyValue } from '../../../src/model/torch-import/pickle.ts';
import { TorchStorage, TorchTensor } from '../../../src/model/torch-import/torch-load.ts';
import { tempDir } from '../../helpers/tmp.ts';
import { maxAbsDiff, useBackend } from '../setup.ts';
import { CLI, FIXTURES, P, expected, f32, pk, tensorCall, torchZip } from './helpers.ts';

function fake(shape: number[], dtype: 'float32' | 'int64' = 'float32'): TorchTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const stride = shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
  return new TorchTensor(new TorchStorage('0', dtype, n, 'cpu'), 0, shape, stride, false);
}

function dict(entries: [string, PyValue][]): PyDict {
  const d = new PyDict();
  for (const [k, v] of entries) d.map.set(k, v);
  return d;
}

/** Shapes of a reference model's state dict. */
function layoutShapes(kind: 'B' | 'S', depth: number, w: number, inDim: number, classes: number, ex = 4): Map<string, number[]> {
  const m = new Map<string, number[]>([
    ['linear_in.weight', [w, inDim]],
    ['linear_in.bias', [w]],
    ['linear_out.weight', [classes, w]],
    ['linear_out.bias', [classes]],
  ]);
  const n = kind === 'B' ? depth : depth - 1;
  for (let i = 0; i < n; i++) {
    if (kind === 'B') {
      m.set(`blocks.${i}.block.0.weight`, [ex * w, w]).set(`blocks.${i}.block.0.bias`, [ex * w]);
      m.set(`blocks.${i}.block.2.weight`, [w, ex * w]).set(`blocks.${i}.block.2.bias`, [w]);
    } else {
      m.set(`layers.${i}.weight`, [w, w]).set(`layers.${i}.bias`, [w]);
    }
    m.set(`layernorms.${i}.weight`, [w]).set(`layernorms.${i}.bias`, [w]);
  }
  return m;
}

const asDict = (shapes: Map<string, number[]>, prefix = ''): PyDict => dict([...shapes].map(([k, s]) => [prefix + k, fake(s)]));

t.test('findStateDict: where the state dict sits, and wrapper prefixes', async (t) => {
  const sd = asDict(layoutShapes('B', 1, 8, 48, 5));
  t.equal(findStateDict(sd, 'f').at, 'top level');
  for (const k of ['model', 'state_dict', 'model_state_dict']) {
    const found = findStateDict(
      dict([
        ['epoch', 3],
        [k, sd],
        ['optimizer', new PyDict()],
      ]),
      'f',
    );
    t.equal(found.at, JSON.stringify(k), `under "${k}"`);
    t.equal(found.tensors.size, 10);
  }
  const dp = findStateDict(asDict(layoutShapes('B', 1, 8, 48, 5), 'module.'), 'f');
  t.same(dp.stripped, ['module.']);
  t.ok(dp.tensors.has('linear_in.weight'));
  const both = findStateDict(dict([['model', asDict(layoutShapes('B', 1, 8, 48, 5), '_orig_mod.module.')]]), 'f');
  t.same(both.stripped.sort(), ['_orig_mod.', 'module.'], 'compiled and wrapped');
  t.ok(both.tensors.has('blocks.0.block.2.bias'));

  t.same(stripWrapperPrefixes('module._orig_mod.linear_in.weight'), { key: 'linear_in.weight', stripped: ['module.', '_orig_mod.'] });
  t.same(stripWrapperPrefixes('blocks.0.module.x'), { key: 'blocks.0.module.x', stripped: [] }, 'only leading prefixes');

  t.throws(
    () =>
      findStateDict(
        dict([
          ['epoch', 3],
          ['opt', new PyDict()],
        ]),
        'f.pt',
      ),
    /no state dict found: the file holds a dict with keys \["epoch", "opt"\]/,
  );
  t.throws(
    () =>
      findStateDict(
        dict([
          [
            'model',
            dict([
              ['a', fake([1])],
              ['n', 1],
            ]),
          ],
        ]),
        'f.pt',
      ),
    /no state dict found/,
    'a dict with non-tensor values is not a state dict',
  );
  t.throws(() => findStateDict(null, 'f.pt'), /the file holds None/);
  t.throws(
    () =>
      findStateDict(
        dict([
          ['module.a', fake([1])],
          ['a', fake([1])],
        ]),
        'f.pt',
      ),
    /two tensors become "a"/,
  );
});

t.test('inferring the model from tensor shapes', async (t) => {
  const infer = (shapes: Map<string, number[]>, req = {}) => resolveModel(shapeEvidence(shapes), req, 'f.pt');
  const b = infer(layoutShapes('B', 12, 1024, 12288, 11230));
  t.same(b.config, { arch: 'B_12-Wi_1024', res: 64, channels: 3, numClasses: 11230 }, 'the paper model at 64x64');
  t.same(b.inferred, ['arch', 'numClasses', 'channels', 'res']);
  t.same(
    infer(layoutShapes('S', 3, 8, 18, 4), { channels: 2 }).config,
    { arch: 'S_3-Wi_8', res: 3, channels: 2, numClasses: 4 },
    'standard MLP, channels given',
  );
  t.same(infer(layoutShapes('B', 2, 4, 27, 3, 2)).config.arch, 'B_2-Wi_4-Ex_2', 'expansion from block.0');
  t.same(infer(layoutShapes('B', 1, 8, 784, 10), { res: 28 }).config, { arch: 'B_1-Wi_8', res: 28, channels: 1, numClasses: 10 }, 'channels from --res');
  t.same(infer(layoutShapes('B', 0, 8, 48, 5)).config.arch, 'B_0-Wi_8', 'no blocks');
  const given = infer(layoutShapes('B', 1, 8, 48, 5), { arch: 'B_1-Wi_8', res: 4, channels: 3, numClasses: 5 });
  t.same(given.inferred, [], 'everything given: nothing inferred');
  t.throws(() => infer(layoutShapes('B', 1, 8, 50, 5)), /cannot infer --res: linear_in takes 50 inputs, which is not 3 x res x res; pass it explicitly/);
  t.throws(() => infer(new Map([['foo', [3]]])), /cannot infer --arch: the tensors have no 2-D linear_in\.weight/);
  const noOut = layoutShapes('B', 1, 8, 48, 5);
  noOut.delete('linear_out.weight');
  t.throws(() => infer(noOut), /cannot infer --num-classes: there is no 2-D linear_out\.weight/);
});

t.test('checkTensors lists every missing, unexpected, mis-shaped and non-float tensor', async (t) => {
  const check = (shapes: Map<string, number[]>, req: object, extra: [string, TorchTensor][] = []) => {
    const found = findStateDict(dict([...[...shapes].map(([k, s]): [string, PyValue] => [k, fake(s)]), ...extra]), 'f.pt');
    const ev = shapeEvidence(new Map([...found.tensors].map(([k, x]) => [k, x.shape])));
    checkTensors(found, resolveModel(ev, req, 'f.pt'), ev, 'f.pt');
  };
  const ok = layoutShapes('B', 2, 8, 48, 5);
  check(ok, {});
  const err = t.throws(() => check(ok, { arch: 'B_3-Wi_8', res: 8, numClasses: 6 }, [['extra.weight', fake([2])]])) as unknown as TorchImportError;
  t.ok(err instanceof TorchImportError);
  t.match(err.message, 'does not fit B_3-Wi_8 at res 8 with 3 channels and 6 classes');
  t.match(
    err.message,
    'missing (6): blocks.2.block.0.weight, blocks.2.block.0.bias, blocks.2.block.2.weight, blocks.2.block.2.bias, layernorms.2.weight, layernorms.2.bias',
  );
  t.match(err.message, 'unexpected (1): extra.weight');
  t.match(err.message, 'linear_in.weight is [8, 48], expected [8, 192]');
  t.match(err.message, 'linear_out.weight is [5, 8], expected [6, 8]');
  t.match(err.message, 'the tensors look like B_2-Wi_8 with 48 inputs (3x4x4) and 5 classes');
  const ints = new Map(ok);
  ints.delete('linear_in.bias');
  t.throws(() => check(ints, {}, [['linear_in.bias', fake([8], 'int64')]]), /not floating point \(1\): linear_in\.bias \(int64\)/);
  const many = layoutShapes('B', 20, 8, 48, 5);
  t.throws(() => check(many, { arch: 'B_1-Wi_8' }), /unexpected \(114\): .*\.\.\. \(102 more\)/, 'long lists are cut');
});

t.test('importing every state-dict fixture: values and logits equal PyTorch', async (t) => {
  await useBackend('cpu');
  const dir = tempDir(t);
  const x = tf.tensor2d(expected.x.values, expected.x.shape as [number, number]);
  t.teardown(() => x.dispose());
  const cases: [string, string, typeof expected.state_dict][] = [
    ['plain.pt', 'top level', expected.state_dict],
    ['checkpoint.pt', '"model"', expected.state_dict],
    ['dataparallel.pt', 'top level', expected.state_dict],
    ['half.pt', 'top level', expected.half_state_dict],
    ['noncontiguous.pt', 'top level', expected.state_dict],
    ['deflated.pt', 'top level', expected.state_dict],
  ];
  for (const [file, at, want] of cases) {
    const out = join(dir, file.replace('.pt', ''));
    const r = importTorchCheckpoint({ input: `${FIXTURES}${file}`, out });
    t.equal(r.at, at, `${file}: state dict at ${at}`);
    t.match(
      r.config,
      { arch: 'B_1-Wi_8', res: 4, channels: 3, numClasses: 5, preprocessing: { normalization: { source: 'imagenet' } } },
      `${file}: model inferred`,
    );
    t.equal(r.numParams, 1005);
    t.same(readdirSync(out).sort(), ['config.json', 'model.safetensors'], `${file}: our model directory`);
    const st = readSafetensorsFile(join(out, 'model.safetensors'));
    t.equal(st.metadata['source_file'], file, 'provenance in the safetensors metadata');
    for (const [k, w] of Object.entries(want)) {
      const got = st.tensors.get(k)!;
      t.ok(got.data.every((v, i) => v === Math.fround(w.values[i]!)) && got.data.length === w.values.length, `${file} ${k}: exact`);
    }
    if (file === 'half.pt') continue; // rounded weights: other logits
    const model = loadModel(out);
    const logits = tf.tidy(() => model.forward(x).dataSync());
    const diff = maxAbsDiff(logits, expected.logits.values);
    t.ok(diff < 1e-5, `${file}: tfjs logits match PyTorch's (max diff ${diff.toExponential(2)})`);
    model.dispose();
  }
  const dp = importTorchCheckpoint({ input: `${FIXTURES}dataparallel.pt`, dryRun: true });
  t.same(dp.stripped, ['module.']);
  t.equal(dp.out, null);
  t.same(importTorchCheckpoint({ input: `${FIXTURES}half.pt`, dryRun: true }).dtypes, { float16: 10 });
  t.equal(importTorchCheckpoint({ input: `${FIXTURES}noncontiguous.pt`, dryRun: true }).strided, 2);
});

t.test('given arch / res / channels / classes are checked against the tensors', async (t) => {
  const input = `${FIXTURES}plain.pt`;
  t.same(importTorchCheckpoint({ input, dryRun: true, arch: 'B_1-Wi_8', res: 4, channels: 3, numClasses: 5 }).inferred, []);
  t.throws(
    () => importTorchCheckpoint({ input, dryRun: true, arch: 'B_12-Wi_1024', res: 64 }),
    /does not fit B_12-Wi_1024 at res 64 with 3 channels and 5 classes:\n {2}missing \(66\)/,
  );
  t.throws(() => importTorchCheckpoint({ input, dryRun: true, res: 64 }), /linear_in\.weight is \[8, 48\], expected \[8, 12288\]/);
  t.throws(() => importTorchCheckpoint({ input, dryRun: true, numClasses: 1000 }), /linear_out\.weight is \[5, 8\], expected \[1000, 8\]/);
  t.throws(() => importTorchCheckpoint({ input, dryRun: true, channels: 1 }), /cannot infer --res: linear_in takes 48 inputs, which is not 1 x res x res/);
  t.throws(
    () => importTorchCheckpoint({ input, dryRun: true, arch: 'S_2-Wi_8' }),
    /missing \(2\): layers\.0\.weight, layers\.0\.bias\n {2}unexpected \(4\): blocks\.0\.block\.0\.weight/,
  );
  t.throws(
    () => importTorchCheckpoint({ input: `${FIXTURES}tensors.pt`, dryRun: true }),
    /no state dict found: the file holds a dict with keys \["tensors", "nested"\]/,
  );
});

t.test('the output directory is written atomically and not clobbered', async (t) => {
  await useBackend('cpu');
  const dir = tempDir(t);
  const input = `${FIXTURES}plain.pt`;
  const leftovers = (): string[] => readdirSync(dir).filter((n) => n.startsWith('.'));

  const fresh = join(dir, 'a', 'b', 'model');
  importTorchCheckpoint({ input, out: fresh });
  t.ok(existsSync(join(fresh, 'config.json')), 'parents are created');
  const empty = join(dir, 'empty');
  mkdirSync(empty);
  importTorchCheckpoint({ input, out: empty });
  t.ok(existsSync(join(empty, 'model.safetensors')), 'an empty directory is filled');

  const busy = join(dir, 'busy');
  mkdirSync(busy);
  writeFileSync(join(busy, 'notes.txt'), 'keep me');
  t.throws(() => importTorchCheckpoint({ input, out: busy }), /exists and is not empty \(pass --force/);
  t.same(readdirSync(busy), ['notes.txt'], 'refused: untouched');
  importTorchCheckpoint({ input: `${FIXTURES}half.pt`, out: busy, force: true });
  t.same(readdirSync(busy).sort(), ['config.json', 'model.safetensors', 'notes.txt'], '--force replaces our two files only');
  const before = readFileSync(join(busy, 'model.safetensors'));
  importTorchCheckpoint({ input, out: busy, force: true });
  t.notSame(readFileSync(join(busy, 'model.safetensors')), before, '--force again: new weights');

  const file = join(dir, 'file');
  writeFileSync(file, 'x');
  t.throws(() => importTorchCheckpoint({ input, out: file }), /exists and is not a directory/);
  t.throws(() => importTorchCheckpoint({ input: `${FIXTURES}plain.pt`, out: join(dir, 'bad'), res: 9 }), TorchImportError);
  t.notOk(existsSync(join(dir, 'bad')), 'a failed import leaves no directory');
  t.same(leftovers(), [], 'no temporary directories left behind');
  t.throws(() => importTorchCheckpoint({ input }), /no output directory given/);
});

t.test('CLI: arguments, exit codes, report', async (t) => {
  await useBackend('cpu');
  const dir = tempDir(t);
  const run = async (args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runImportCli(args, { stdout: (s) => out.push(s), stderr: (s) => err.push(s) });
    return { code, out: out.join(''), err: err.join('') };
  };
  const help = await run(['--help']);
  t.equal(help.code, 0);
  t.match(help.out, 'Usage: npm run import -- <file.pt> --out <dir>');
  t.match(help.out, 'refuses any');
  for (const [args, re] of [
    [[], /no input file given/],
    [['a.pt', 'b.pt', '--out', 'o'], /one input file expected, got 2/],
    [['a.pt'], /--out <dir> is required/],
    [['a.pt', '--out', 'o', '--res', 'x'], /--res: not a number: x/],
    [['a.pt', '--out', 'o', '--num-classes', '0'], /--num-classes: must be a positive integer, got 0/],
    [['a.pt', '--out', 'o', '--arch', 'ViT-B'], /--arch: bad architecture "ViT-B"/],
    [['a.pt', '--out', 'o', '--bogus'], /Unknown option '--bogus'/],
  ] as [string[], RegExp][]) {
    const r = await run(args);
    t.equal(r.code, 2, `usage error: ${args.join(' ')}`);
    t.match(r.err, re);
  }
  t.same(parseImportArgs(['f.pt', '--out', 'o', '--arch', 'B_1-Wi_8', '--res', '4', '--channels', '3', '--num-classes', '5', '--force']), {
    input: 'f.pt',
    out: 'o',
    arch: 'B_1-Wi_8',
    res: 4,
    channels: 3,
    numClasses: 5,
    force: true,
  });

  const missing = await run([join(dir, 'nope.pt'), '--out', join(dir, 'o')]);
  t.equal(missing.code, 1, 'a missing file fails with 1');
  t.match(missing.err, /cannot open/);
  const mismatch = await run([`${FIXTURES}plain.pt`, '--out', join(dir, 'o'), '--arch', 'B_2-Wi_8']);
  t.equal(mismatch.code, 1);
  t.match(mismatch.err, 'missing (6)');

  const ok = await run([`${FIXTURES}dataparallel.pt`, '--out', join(dir, 'm'), '--res', '4']);
  t.equal(ok.code, 0, ok.err);
  t.match(ok.out, 'state dict at top level (stripped "module.")');
  t.match(ok.out, 'model: B_1-Wi_8, 3x4x4 input (48), 5 classes; 1,005 parameters');
  t.match(ok.out, 'arch inferred, res checked');
  t.match(ok.out, `wrote ${join(dir, 'm')}`);
  const dry = await run([`${FIXTURES}half.pt`, '--dry-run']);
  t.equal(dry.code, 0);
  t.match(dry.out, '10 float16; converted to float32');
  t.match(dry.out, 'dry run: nothing written');

  // A generated file with an int64 tensor where a weight belongs.
  const pkl = pk(
    P.proto(),
    P.emptyDict,
    P.str('linear_in.weight'),
    tensorCall('0', 8, [2, 4], [4, 1], 0, 'LongStorage'),
    P.setitem,
    P.str('linear_in.bias'),
    tensorCall('1', 2, [2], [1]),
    P.setitem,
    P.str('linear_out.weight'),
    tensorCall('2', 2, [1, 2], [2, 1]),
    P.setitem,
    P.str('linear_out.bias'),
    tensorCall('3', 1, [1], [1]),
    P.setitem,
    P.stop,
  );
  const longs = Buffer.alloc(64);
  writeFileSync(join(dir, 'ints.pt'), torchZip(pkl, { '0': longs, '1': f32([1, 2]), '2': f32([1, 2]), '3': f32([1]) }));
  const ints = await run([join(dir, 'ints.pt'), '--dry-run', '--channels', '1']);
  t.equal(ints.code, 1);
  t.match(ints.err, 'not floating point (1): linear_in.weight (int64)');
});

t.test('the real entry point: npm run import', async (t) => {
  const dir = tempDir(t);
  const out = execFileSync(
    process.execPath,
    ['--import', 'tsx', CLI, `${FIXTURES}checkpoint.pt`, '--out', join(dir, 'm'), '--arch', 'B_1-Wi_8', '--res', '4'],
    { encoding: 'utf8', timeout: 180_000 },
  );
  t.match(out, 'state dict at "model"');
  t.ok(existsSync(join(dir, 'm', 'model.safetensors')));
  let code = 0;
  try {
    execFileSync(process.execPath, ['--import', 'tsx', CLI, '--res', 'x'], { stdio: 'pipe', timeout: 180_000 });
  } catch (e) {
    code = (e as { status: number }).status;
  }
  t.equal(code, 2, 'usage errors exit 2');
});

t.test('the normalisation is recorded in config.json: ImageNet by default, or --mean/--std', async (t) => {
  await useBackend('cpu');
  const dir = tempDir(t);
  const run = async (args: string[]) => {
    const out: string[] = [];
    const err: string[] = [];
    const code = await runImportCli(args, { stdout: (s) => out.push(s), stderr: (s) => err.push(s) });
    return { code, out: out.join(''), err: err.join('') };
  };
  const read = (d: string) =>
    JSON.parse(readFileSync(join(d, 'config.json'), 'utf8')) as { preprocessing: Record<string, unknown>; provenance: Record<string, unknown> };
  const a = await run([`${FIXTURES}dataparallel.pt`, '--out', join(dir, 'a'), '--res', '4']);
  t.equal(a.code, 0, a.err);
  t.match(a.out, /preprocessing: \(pixel - mean\) \/ std with mean 123\.675,116\.28,103\.53, std 58\.395,57\.12,57\.375 \(imagenet; 0-255 units\)/);
  t.same(read(join(dir, 'a')).preprocessing, {
    mean: [0.485 * 255, 0.456 * 255, 0.406 * 255],
    std: [0.229 * 255, 0.224 * 255, 0.225 * 255],
    normalize: 'imagenet',
    pixel_range: [0, 255],
    resolution: 4,
    channels: 3,
    input_layout: 'CHW',
    eval_crop: { kind: 'center', fraction: 1 },
  });
  t.match(read(join(dir, 'a')).provenance, { imported_from: /dataparallel\.pt$/ });
  const b = await run([`${FIXTURES}dataparallel.pt`, '--out', join(dir, 'b'), '--res', '4', '--mean', '1,2,3', '--std', '4,5,6']);
  t.equal(b.code, 0, b.err);
  t.match(read(join(dir, 'b')).preprocessing, { mean: [1, 2, 3], std: [4, 5, 6], normalize: 'explicit' });
  const c = await run([`${FIXTURES}dataparallel.pt`, '--out', join(dir, 'c'), '--res', '4', '--mean', '1,2', '--std', '4,5']);
  t.equal(c.code, 1, 'two values for a 3-channel model');
  t.match(c.err, /--mean\/--std: mean must be 3 finite numbers/);
  for (const [args, re] of [
    [['--mean', '1,2,3'], /--mean and --std go together/],
    [['--mean', '1,2,3', '--std', '1,0,1'], /--std: must be positive/],
    [['--normalize', 'dataset'], /--normalize: expected one of imagenet, got dataset/],
  ] as [string[], RegExp][]) {
    const r = await run([`${FIXTURES}dataparallel.pt`, '--out', join(dir, 'x'), ...args]);
    t.equal(r.code, 2, args.join(' '));
    t.match(r.err, re);
  }
});
