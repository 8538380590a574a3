// The batch frame's encode and decode, one JSON line per (batch size, dtype, operation):
//   npm run bench -- frame [--batch-size 1024,16384] [--frame-dtype float32,uint8] [--rounds 5]
// write-in-place: writeFrameHeader into a ring-slot-sized buffer, as the loader does per batch
//   (the workers then write labels and pixels straight into the slot);
// write-msgpackr-pack: msgpackr's pack() of the same frame (header values, labels, images as
//   bin), i.e. the frame built in msgpackr's own buffer, payload copied in;
// read-frame: readFrame on the slot (shared memory), read-frame-buffer: on a copy in a Buffer (as
//   read from a dump file or a socket); msgpackr decode + the frame's checks, zero-copy sections;
// frame-length: frameLength (a walk that decodes nothing).
// Keys look like the loader's ("<shard>/<key>"). Operations alternate within each round so that
// they see the same machine load; the median round is reported, with each operation's time
// relative to write-in-place of the same frame.
import { parseArgs } from 'node:util';
import { Packr } from 'msgpackr';
import { type FrameHeader, frameLayout, frameLength, readFrame, writeFrameHeader } from '../src/pipeline/ring/frame.ts';

const { values: v } = parseArgs({
  options: {
    'batch-size': { type: 'string', default: '1024,16384' },
    'frame-dtype': { type: 'string', default: 'float32,uint8' },
    res: { type: 'string', default: '64' },
    rounds: { type: 'string', default: '5' },
    'min-ms': { type: 'string', default: '300' },
    ops: { type: 'string', default: 'write-in-place,write-msgpackr-pack,read-frame,read-frame-buffer,frame-length' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (v.help) {
  process.stdout.write(`npm run bench -- frame [--batch-size 1024,16384] [--frame-dtype float32,uint8] [--res 64] [--rounds 5] [--min-ms 300]
  [--ops write-in-place,write-msgpackr-pack,read-frame,read-frame-buffer,frame-length]
Prints {bench:"frame", op, batch_size, frame_dtype, frame_mb, ms, vs_write_in_place, rounds} per operation:
write-in-place (writeFrameHeader, as the loader), write-msgpackr-pack (msgpackr pack of the same frame),
read-frame (readFrame on the slot), read-frame-buffer (on a Buffer copy) and frame-length (frameLength); medians of alternating rounds.\n`);
  process.exit(0);
}
const list = (s: string): string[] => s.split(',').filter(Boolean);
const batchSizes = list(v['batch-size']!).map(Number);
const dtypes = list(v['frame-dtype']!);
for (const d of dtypes) if (d !== 'float32' && d !== 'uint8') throw new Error(`--frame-dtype: float32 or uint8, got ${d}`);
const res = Number(v.res);
const rounds = Number(v.rounds);
const minMs = Number(v['min-ms']);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Milliseconds per call of `fn`, over at least minMs (at least 2 calls). */
function time(fn: () => unknown): number {
  fn();
  let n = 0;
  const t0 = performance.now();
  let el = 0;
  while (n < 2 || el < minMs) {
    fn();
    n++;
    el = performance.now() - t0;
  }
  return el / n;
}

const packr = new Packr();
for (const dtype of dtypes as ('float32' | 'uint8')[]) {
  for (const n of batchSizes) {
    const h: FrameHeader = {
      epoch: 3,
      step: 1234,
      rank: 0,
      world: 1,
      n,
      channels: 3,
      height: res,
      width: res,
      keys: Array.from({ length: n }, (_, i) => `train-${String(i % 97).padStart(6, '0')}/${String(i).padStart(9, '0')}`),
      ...(dtype === 'uint8' ? { dtype, mean: [123.675, 116.28, 103.53], std: [58.395, 57.12, 57.375] } : {}),
    };
    const layout = frameLayout(h);
    // A slot as the ring allocates it: shared memory, 64-byte aligned.
    const slot = new Uint8Array(new SharedArrayBuffer(layout.totalBytes + 64), 64, layout.totalBytes);
    writeFrameHeader(slot, h);
    for (let i = layout.labelsOffset; i < layout.labelsOffset + 4 * n; i++) slot[i] = i & 255;
    for (let i = layout.imagesOffset; i < layout.totalBytes; i += 4096) slot[i] = i & 255;
    const copy = Buffer.from(slot);
    const labels = Buffer.from(slot.buffer, slot.byteOffset + layout.labelsOffset, 4 * n);
    const images = Buffer.from(slot.buffer, slot.byteOffset + layout.imagesOffset, layout.totalBytes - layout.imagesOffset);
    const doc = {
      epoch: h.epoch,
      step: h.step,
      rank: h.rank,
      world: h.world,
      shape: [n, 3, res, res],
      dtype: dtype,
      ...(dtype === 'uint8' ? { mean: h.mean, std: h.std } : {}),
      keys: h.keys,
      labels,
      images,
    };
    const ops: Record<string, () => unknown> = {
      'write-in-place': () => writeFrameHeader(slot, h),
      'write-msgpackr-pack': () => packr.pack(doc),
      'read-frame': () => readFrame(slot),
      'read-frame-buffer': () => readFrame(copy),
      'frame-length': () => frameLength(slot),
    };
    const names = list(v.ops!);
    for (const name of names) if (!(name in ops)) throw new Error(`--ops: one of ${Object.keys(ops).join(', ')}, got ${name}`);
    const times = new Map<string, number[]>(names.map((k) => [k, []]));
    for (let r = 0; r < rounds; r++) {
      for (const name of r % 2 ? [...names].reverse() : names) times.get(name)!.push(time(ops[name]!));
    }
    const ref = times.has('write-in-place') ? median(times.get('write-in-place')!) : Number.NaN;
    for (const name of names) {
      const ms = median(times.get(name)!);
      const line = {
        bench: 'frame',
        op: name,
        batch_size: n,
        frame_dtype: dtype,
        frame_mb: Number((layout.totalBytes / 1e6).toFixed(1)),
        ms: Number(ms.toFixed(4)),
        ...(Number.isNaN(ref) ? {} : { vs_write_in_place: Number((ms / ref).toFixed(2)) }),
        rounds,
      };
      process.stdout.write(`${JSON.stringify(line)}\n`);
    }
  }
}
