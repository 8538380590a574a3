// Where a loader worker's time goes, per frame dtype: the worker's per-sample work (as
// src/pipeline/loader/loader-worker.ts does it: positioned read, label, decode, crop parameters,
// the augmenter's copy of the crop's rows into its heap, the resampling kernel, the copy of the
// finished image into the batch slot) replayed on this thread with a timer around each stage, in
// an epoch's shuffled order, into a shared-memory slot like the ring's. Dtypes alternate per
// round; one JSON line per (encoding, dtype) with the median round's microseconds per image by
// stage and each stage's share, and each stage's fastest round (us_per_image_min). Timers cost ~0.1 us each (7 per image; reported as `timers_us`).
//   npm run bench -- loader-stages [--encoding raw,jpeg] [--images 8192] [--rounds 5] [--frame-dtype float32,uint8]
// With --pipeline it also runs the real loader (1 worker, same data, same rounds interleaved) and
// reports its microseconds per image beside the sum of the stages: the rest is the task, ring and
// thread overhead outside the per-sample work.
import { closeSync, mkdtempSync, openSync, readSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { decodeJpegSync } from '../src/pipeline/image/decode.ts';
import { parseNpyImage } from '../src/pipeline/image/npy-image.ts';
import type { RawImage } from '../src/pipeline/image/types.ts';
import { randomResizedCrop } from '../src/pipeline/augment/random-resized-crop.ts';
import { normalisation } from '../src/pipeline/augment/normalisation.ts';
import { PRETRAIN_AUGMENT } from '../src/pipeline/augment/settings.ts';
import { openDataset } from '../src/pipeline/loader/dataset.ts';
import { Loader } from '../src/pipeline/loader/loader.ts';
import { epochPermutation } from '../src/pipeline/loader/plan.ts';
import { createResampler } from '../src/pipeline/augment/create-resampler.ts';
import { syntheticShards } from './synthetic-shards.ts';

const { values: v } = parseArgs({
  options: {
    encoding: { type: 'string', default: 'raw,jpeg' },
    images: { type: 'string', default: '8192' },
    rounds: { type: 'string', default: '5' },
    'frame-dtype': { type: 'string', default: 'float32,uint8' },
    pipeline: { type: 'boolean', default: false },
    'batch-size': { type: 'string', default: '1024' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (v.help) {
  process.stdout.write(
    'npm run bench -- loader-stages [--encoding raw,jpeg] [--images 8192] [--rounds 5] [--frame-dtype float32,uint8] [--pipeline] [--batch-size 1024]\n',
  );
  process.exit(0);
}
const count = Number(v.images);
const rounds = Number(v.rounds);
const dtypes = v['frame-dtype']!.split(',') as ('float32' | 'uint8')[];
const batchSize = Number(v['batch-size']);
const tmp = mkdtempSync(join(tmpdir(), 'bench-stages-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

const STAGES = ['read', 'label', 'decode', 'crop_params', 'copy_in', 'kernel', 'copy_out'] as const;
type Stage = (typeof STAGES)[number];

const dataset = (encoding: string): Promise<string> => syntheticShards(join(tmp, encoding), count, encoding as 'raw' | 'jpeg');

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

for (const encoding of v.encoding!.split(',')) {
  const index = await dataset(encoding);
  const ds = await openDataset(index);
  const table = ds.table;
  const res = ds.resolution ?? 64;
  const C = ds.channels;
  const chw = C * res * res;
  const norm = normalisation(ds.mean ?? [127, 127, 127], ds.std ?? [64, 64, 64]);
  const fds = table.shardPaths.map((p) => openSync(p, 'r'));
  let readBuf = Buffer.allocUnsafe(1 << 16);
  let decodeOut = new Uint8Array(1 << 16);
  // The batch slot: shared memory, as the ring's.
  const slotF32 = new Float32Array(new SharedArrayBuffer(batchSize * chw * 4));
  const slotU8 = new Uint8ClampedArray(new SharedArrayBuffer(batchSize * chw));

  // One augmenter per dtype, its stages timed by wrapping the instance's own steps: the copy of
  // the crop's rows into its heap and the kernel call; the rest of run() is the copy out.
  const acc: Record<Stage, number> = Object.fromEntries(STAGES.map((s) => [s, 0])) as Record<Stage, number>;
  const timed = (stage: Stage, f: (...a: never[]) => unknown) =>
    function (this: unknown, ...a: never[]) {
      const t0 = performance.now();
      const r = f.apply(this, a);
      acc[stage] += performance.now() - t0;
      return r;
    };
  const augmenter = createResampler(res, C);
  const inner = augmenter as unknown as { copyRows?: (...a: never[]) => unknown; ex?: { resample: (...a: never[]) => number } };
  const wasm = typeof inner.copyRows === 'function' && inner.ex !== undefined;
  if (wasm) {
    inner.copyRows = timed('copy_in', inner.copyRows!);
    // exports are frozen: wrap through a copy of the object.
    const ex = inner.ex!;
    inner.ex = { ...ex, resample: timed('kernel', ex.resample) as typeof ex.resample };
  }

  const decode = (i: number, bytes: Uint8Array): RawImage => {
    const kind = table.imageKind[i]!;
    if (kind === 0) return parseNpyImage(bytes);
    const img = decodeJpegSync(bytes, C, undefined, decodeOut);
    if (!img) throw new Error('no fast JPEG decoder here: this bench needs it');
    if (img.data.length > decodeOut.length) decodeOut = new Uint8Array(img.data.length);
    return img;
  };

  const perRound: Record<string, Record<Stage | 'total' | 'loop' | 'cpu', number[]>> = {};
  const pipelineUs: Record<string, number[]> = {};
  let epoch = 0;
  for (let r = 0; r < rounds + 1; r++) {
    for (const dtype of dtypes) {
      for (const s of STAGES) acc[s] = 0;
      const order = epochPermutation(table.count, 0, epoch++);
      let labels = 0;
      const c0 = process.cpuUsage();
      const tLoop = performance.now();
      for (let k = 0; k < order.length; k++) {
        const i = order[k]!;
        const row = k % batchSize;
        let t = performance.now();
        const lo = table.labelOffset[i]!;
        const ls = table.labelSize[i]!;
        const io = table.imageOffset[i]!;
        const is = table.imageSize[i]!;
        const start = Math.min(lo, io);
        const span = Math.max(lo + ls, io + is) - start;
        if (readBuf.length < span) readBuf = Buffer.allocUnsafe(span * 2);
        readSync(fds[table.shard[i]!]!, readBuf, 0, span, start);
        let t2 = performance.now();
        acc.read += t2 - t;
        t = t2;
        const label = readBuf.subarray(lo - start, lo - start + ls);
        let lab = 0;
        for (let q = 0; q < label.length; q++) if (label[q]! >= 48 && label[q]! <= 57) lab = lab * 10 + label[q]! - 48;
        t2 = performance.now();
        acc.label += t2 - t;
        t = t2;
        const img = decode(i, readBuf.subarray(io - start, io - start + is));
        t2 = performance.now();
        acc.decode += t2 - t;
        t = t2;
        const box = randomResizedCrop(0, epoch, i, img.width, img.height, PRETRAIN_AUGMENT);
        t2 = performance.now();
        acc.crop_params += t2 - t;
        t = t2;
        const before = acc.copy_in + acc.kernel;
        if (dtype === 'uint8') augmenter.run(img.data, img.width, img.height, box, slotU8, row * chw);
        else augmenter.run(img.data, img.width, img.height, box, slotF32, row * chw, norm);
        t2 = performance.now();
        // What run() did besides the two wrapped steps: the copy out (and, for float32, writing
        // the 2 x C normalisation factors into the heap).
        acc.copy_out += t2 - t - (acc.copy_in + acc.kernel - before);
        labels += lab;
      }
      const loop = performance.now() - tLoop;
      const cpu = process.cpuUsage(c0);
      if (labels < 0) throw new Error('unreachable: keeps the label parse from being optimised away');
      if (r === 0) continue; // warm-up (JIT, page cache)
      const rec = (perRound[dtype] ??= Object.fromEntries([...STAGES, 'total', 'loop', 'cpu'].map((s) => [s, []])) as unknown as Record<
        Stage | 'total' | 'loop' | 'cpu',
        number[]
      >);
      let total = 0;
      for (const s of STAGES) {
        rec[s].push((1000 * acc[s]) / order.length);
        total += acc[s];
      }
      rec.total.push((1000 * total) / order.length);
      rec.loop.push((1000 * loop) / order.length);
      rec.cpu.push((cpu.user + cpu.system) / order.length);
    }
    if (v.pipeline) {
      for (const dtype of dtypes) {
        const loader = await Loader.open({ data: index, batchSize, mode: 'train', workers: 1, frameDtype: dtype });
        let e = 0;
        for await (const b of loader.epoch(e++)) b.release();
        let n = 0;
        const t0 = performance.now();
        for (let k = 0; k < 2; k++)
          for await (const b of loader.epoch(e++)) {
            n += b.n;
            b.release();
          }
        const us = (1000 * (performance.now() - t0)) / n;
        await loader.close();
        if (r > 0) (pipelineUs[dtype] ??= []).push(us);
      }
    }
  }
  for (const fd of fds) closeSync(fd);
  // Timer overhead: 7 performance.now() pairs' worth per image.
  const t0 = performance.now();
  for (let k = 0; k < 100000; k++) performance.now();
  const timerUs = ((performance.now() - t0) * 1000) / 100000;
  for (const dtype of dtypes) {
    const rec = perRound[dtype]!;
    const mid = rec.total.indexOf(median(rec.total));
    const stages = Object.fromEntries(STAGES.map((s) => [s, Number(rec[s][mid]!.toFixed(2))]));
    const total = rec.total[mid]!;
    process.stdout.write(
      `${JSON.stringify({
        bench: 'loader-stages',
        encoding,
        frame_dtype: dtype,
        augmenter: wasm ? 'wasm' : 'js',
        images: table.count,
        rounds,
        us_per_image: stages,
        // Per stage, its fastest round: on a machine shared with other jobs the least disturbed figure.
        us_per_image_min: Object.fromEntries(STAGES.map((s) => [s, Number(Math.min(...rec[s]).toFixed(2))])),
        stages_min_us: Number(STAGES.reduce((a, s) => a + Math.min(...rec[s]), 0).toFixed(2)),
        share_pct: Object.fromEntries(STAGES.map((s) => [s, Number(((100 * rec[s][mid]!) / total).toFixed(1))])),
        stages_us: Number(total.toFixed(2)),
        loop_us: Number(rec.loop[mid]!.toFixed(2)),
        // CPU time of the loop per image (this thread does all the work): median and fastest round.
        cpu_us: Number(median(rec.cpu).toFixed(2)),
        cpu_min_us: Number(Math.min(...rec.cpu).toFixed(2)),
        timers_us: Number((timerUs * 9).toFixed(2)),
        rounds_total_us: rec.total.map((x) => Number(x.toFixed(2))),
        ...(pipelineUs[dtype]
          ? {
              pipeline_1_worker_us: Number(median(pipelineUs[dtype]).toFixed(2)),
              pipeline_1_worker_min_us: Number(Math.min(...pipelineUs[dtype]).toFixed(2)),
              pipeline_rounds_us: pipelineUs[dtype].map((x) => Number(x.toFixed(2))),
            }
          : {}),
      })}\n`,
    );
  }
}
