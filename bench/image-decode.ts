// Micro-benchmark of the image stage, one JSON line per case:
//   node --import tsx bench/image-decode.ts
// images_per_sec is for one JS thread. The "in flight" sharp case also uses libuv's pool
// (UV_THREADPOOL_SIZE, default 4) underneath, so it is not a one-core figure.
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { decodeJpegSync } from '../src/pipeline/image/decode.ts';
import { fitImage, resize, targetSize } from '../src/pipeline/image/resize.ts';
import type { RawImage } from '../src/pipeline/image/types.ts';

const { values: opts } = parseArgs({ options: { seconds: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
if (opts.help) {
  process.stdout.write(`npm run bench -- image-decode [--seconds S]
Decoders and the resize on one JS thread: libjpeg-turbo (64x64 and 500x375), the area resize,
sharp (one at a time and in flight). One JSON line per case: {bench, case, images_per_sec,
us_per_image, iterations, ...}. --seconds: minimum time per case (default 1.5, or BENCH_SECONDS).
`);
  process.exit(0);
}

const RES = 64;
const MIN_SECONDS = Number(opts.seconds ?? process.env.BENCH_SECONDS ?? 1.5);

/** Gradients + sinusoid + pixel noise, so that the JPEG costs what a photograph costs. */
function photoLike(width: number, height: number): Buffer {
  let seed = 12345;
  const rand = (): number => {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    return seed / 4294967296;
  };
  const data = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const p = (y * width + x) * 3;
      const n = (rand() - 0.5) * 40;
      const wave = 60 * Math.sin(x / 23) * Math.cos(y / 31);
      data[p] = clampByte((200 * x) / width + wave + n);
      data[p + 1] = clampByte((220 * y) / height - wave + n);
      data[p + 2] = clampByte(128 + 90 * Math.sin((x + 2 * y) / 41) + n);
    }
  }
  return data;
}

function clampByte(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
}

async function jpeg(width: number, height: number): Promise<Buffer> {
  return sharp(photoLike(width, height), { raw: { width, height, channels: 3 } })
    .jpeg({ quality: 90 })
    .toBuffer();
}

interface Result {
  bench: string;
  case: string;
  images_per_sec: number;
  us_per_image: number;
  iterations: number;
  [extra: string]: string | number;
}

function report(name: string, count: number, seconds: number, extra: Record<string, string | number> = {}): void {
  const r: Result = {
    bench: 'image-decode',
    case: name,
    images_per_sec: Math.round(count / seconds),
    us_per_image: Math.round((seconds / count) * 1e6 * 10) / 10,
    iterations: count,
    ...extra,
  };
  console.log(JSON.stringify(r));
}

function timeSync(name: string, fn: () => void, extra?: Record<string, string | number>): void {
  for (let i = 0; i < 20; i++) fn(); // warm-up: JIT and weight-table cache
  let count = 0;
  const t0 = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < MIN_SECONDS) {
    for (let i = 0; i < 10; i++) fn();
    count += 10;
    elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
  }
  report(name, count, elapsed, extra);
}

async function timeAsync(name: string, fn: () => Promise<unknown>, inFlight: number, extra?: Record<string, string | number>): Promise<void> {
  for (let i = 0; i < 10; i++) await fn();
  let count = 0;
  const t0 = process.hrtime.bigint();
  const seconds = (): number => Number(process.hrtime.bigint() - t0) / 1e9;
  const lane = async (): Promise<void> => {
    while (seconds() < MIN_SECONDS) {
      await fn();
      count++;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, lane));
  report(name, count, seconds(), extra);
}

function turbo(bytes: Buffer, out?: Uint8Array): RawImage {
  const img = decodeJpegSync(bytes, 3, 'bench.jpg', out);
  if (img === null) throw new Error('fast path declined the benchmark JPEG');
  return img;
}

async function sharpDecode(bytes: Buffer): Promise<RawImage> {
  const { data, info } = await sharp(bytes).raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: 3 };
}

const small = await jpeg(64, 64);
const photo = await jpeg(500, 375);
const photoPixels = turbo(photo);
const target = targetSize(500, 375, RES, 'max-side');
const decodeBuf = new Uint8Array(500 * 375 * 3);
const resizeBuf = new Uint8Array(target.width * target.height * 3);
const info = { jpeg_bytes: photo.length, size: '500x375', target: `${target.width}x${target.height}` };

timeSync('jpeg-turbo decode 64x64', () => turbo(small), { jpeg_bytes: small.length });
timeSync('jpeg-turbo decode 500x375 (no resize)', () => turbo(photo, decodeBuf), info);
timeSync('area resize 500x375 -> max-side 64 (no decode)', () => resize(photoPixels, target.width, target.height, undefined, resizeBuf), info);
timeSync('jpeg-turbo decode + area resize 500x375 -> max-side 64', () => fitImage(turbo(photo), RES, 'max-side'), info);
timeSync('jpeg-turbo decode + area resize, reused buffers', () => resize(turbo(photo, decodeBuf), target.width, target.height, undefined, resizeBuf), info);
// Random-resized-crop geometry on a stored 64x64 image (scale 0.08..1, square for simplicity):
// the resize the training hot loop would run per sample.
const stored = turbo(small);
const crops = Array.from({ length: 256 }, (_, i) => {
  const side = Math.sqrt(0.08 + 0.92 * ((i * 0.618034) % 1)) * 64;
  const free = 64 - side;
  return { x: free * ((i * 0.414214) % 1), y: free * ((i * 0.732051) % 1), width: side, height: side };
});
const rrcBuf = new Uint8Array(64 * 64 * 3);
let cropIndex = 0;
timeSync('resize random crop of 64x64 -> 64x64 (no decode)', () => resize(stored, 64, 64, crops[cropIndex++ & 255], rrcBuf));
await timeAsync('sharp decode + area resize 500x375 -> max-side 64', async () => fitImage(await sharpDecode(photo), RES, 'max-side'), 1, info);
const sharpResize = (): Promise<Buffer> => sharp(photo).resize(RES, RES, { fit: 'inside' }).raw().toBuffer();
await timeAsync('sharp resize (shrink-on-load) 500x375 -> 64, 1 in flight', sharpResize, 1, info);
await timeAsync('sharp resize (shrink-on-load) 500x375 -> 64, 8 in flight', sharpResize, 8, { ...info, note: 'uses the libuv pool' });
