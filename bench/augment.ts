// Micro-benchmark of the per-image resampling kernel, TypeScript Resampler vs WasmResampler, one JSON line
// per (case, impl):
//   node --import tsx bench/augment.ts [--seconds S] [--repeats N] [--case NAME] [--compare FILE]
// --compare runs another build of resample.c (say the previous commit's resample.wasm) as
// wasm-compare rows, interleaved with the others, and reports each wasm row against it.
// Random-resized crops (torchvision defaults, flip on) of random images into a batch in a
// SharedArrayBuffer, as the loader does. Each case is timed `repeats` times, the implementations
// interleaved so that they see the same machine load; the best repeat is reported (shared,
// noisy machines only ever make a run slower). images_per_sec is for one JS thread. The -uint8
// rows write rounded uint8 pixels (uint8 frames) instead of normalised float32.
import { parseArgs } from 'node:util';
import type { CropBox } from '../src/pipeline/augment/crop-box.ts';
import { normalisation } from '../src/pipeline/augment/normalisation.ts';
import { randomResizedCrop } from '../src/pipeline/augment/random-resized-crop.ts';
import { Resampler, type ImageResampler, type ResampleTarget } from '../src/pipeline/augment/resample.ts';
import { PRETRAIN_AUGMENT } from '../src/pipeline/augment/settings.ts';
import { WasmResampler, wasmResampleModule } from '../src/pipeline/augment/wasm/resample-wasm.ts';

const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: process.env.BENCH_SECONDS ?? '0.5' },
    repeats: { type: 'string', default: '5' },
    case: { type: 'string' },
    compare: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (opts.help) {
  process.stdout.write(
    'Usage: node --import tsx bench/augment.ts [--seconds S per repeat] [--repeats N] [--case rgb64x48|rgb64x64|gray28|rgb500x375] [--compare other-build.wasm]\n',
  );
  process.exit(0);
}
const SECONDS = Number(opts.seconds);
const REPEATS = Number(opts.repeats);

interface Case {
  name: string;
  width: number;
  height: number;
  channels: number;
  res: number;
}

const CASES: Case[] = [
  { name: 'rgb64x48', width: 64, height: 48, channels: 3, res: 64 },
  { name: 'rgb64x64', width: 64, height: 64, channels: 3, res: 64 },
  { name: 'gray28', width: 28, height: 28, channels: 1, res: 28 },
  // Downscale (area tables with many taps): not the loader's hot case, reported for reference.
  { name: 'rgb500x375', width: 500, height: 375, channels: 3, res: 64 },
];

const IMAGES = 16;
const BOXES = 1024;
const BATCH = 256;

function fixture(k: Case): { images: Uint8Array[]; boxes: CropBox[] } {
  let seed = 987654321;
  const rand = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed >>> 24;
  };
  const images = Array.from({ length: IMAGES }, () => Uint8Array.from({ length: k.width * k.height * k.channels }, rand));
  const boxes = Array.from({ length: BOXES }, (_, i) => randomResizedCrop(7, 0, i, k.width, k.height, PRETRAIN_AUGMENT));
  return { images, boxes };
}

/** Images per second over at least `seconds`, after a warm-up. */
function time(aug: ImageResampler, k: Case, fx: ReturnType<typeof fixture>, out: ResampleTarget, seconds: number): { rate: number; n: number } {
  const norm = k.channels === 3 ? normalisation([123.675, 116.28, 103.53], [58.395, 57.12, 57.375]) : normalisation([33.3], [78.6]);
  const per = k.channels * k.res * k.res;
  // uint8 targets hold pixels: no normalisation (the loader passes none for uint8 frames).
  const outNorm = out instanceof Float32Array ? norm : undefined;
  let i = 0;
  const step = (count: number): void => {
    for (let j = 0; j < count; j++, i++) aug.run(fx.images[i % IMAGES]!, k.width, k.height, fx.boxes[i % BOXES]!, out, (i % BATCH) * per, outNorm);
  };
  step(200);
  const chunk = 200;
  let n = 0;
  const t0 = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < seconds) {
    step(chunk);
    n += chunk;
    elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  }
  return { rate: n / elapsed, n };
}

if (!wasmResampleModule()) process.stderr.write('WebAssembly SIMD unavailable: wasm rows skipped\n');
for (const k of CASES) {
  if (opts.case && opts.case !== k.name) continue;
  const fx = fixture(k);
  const out = new Float32Array(new SharedArrayBuffer(BATCH * k.channels * k.res * k.res * 4));
  const outU8 = new Uint8ClampedArray(new SharedArrayBuffer(BATCH * k.channels * k.res * k.res));
  const impls: Array<[string, ImageResampler]> = [
    ['js', new Resampler(k.res, k.channels)],
    ['js-uint8', new Resampler(k.res, k.channels)],
  ];
  if (wasmResampleModule()) impls.push(['wasm', new WasmResampler(k.res, k.channels)], ['wasm-uint8', new WasmResampler(k.res, k.channels)]);
  if (opts.compare) {
    const wasmFile = opts.compare;
    impls.push(
      ['wasm-compare', new WasmResampler(k.res, k.channels, { wasmFile })],
      ['wasm-compare-uint8', new WasmResampler(k.res, k.channels, { wasmFile })],
    );
  }
  const best = new Map<string, { rate: number; n: number }>();
  for (let r = 0; r < REPEATS; r++) {
    for (const [name, aug] of impls) {
      const t = time(aug, k, fx, name.endsWith('-uint8') ? outU8 : out, SECONDS);
      if (!best.has(name) || t.rate > best.get(name)!.rate) best.set(name, t);
    }
  }
  const js = best.get('js')!.rate;
  for (const [name] of impls) {
    const b = best.get(name)!;
    const line: Record<string, string | number> = {
      bench: 'augment',
      impl: name,
      case: `${k.name}->${k.res}`,
      images_per_sec: Math.round(b.rate),
      us_per_image: Number((1e6 / b.rate).toFixed(3)),
      iterations: b.n,
      repeats: REPEATS,
    };
    if (name !== 'js') line.speedup_vs_js = Number((b.rate / js).toFixed(2));
    if (name === 'wasm-uint8') line.speedup_vs_wasm_float32 = Number((b.rate / best.get('wasm')!.rate).toFixed(2));
    // This build's time over the other build's, same frame dtype.
    const other = best.get(name === 'wasm' ? 'wasm-compare' : name === 'wasm-uint8' ? 'wasm-compare-uint8' : '');
    if (other) line.time_vs_compare = Number((other.rate / b.rate).toFixed(3));
    process.stdout.write(JSON.stringify(line) + '\n');
  }
}
