// Loader throughput, end to end: shard bytes on disk -> decoded, augmented, normalised float32
// rows (or uint8 pixels, --frame-dtype) in a ring slot, consumed (released at once) on the main
// thread. One JSON line per configuration. Without --data it generates synthetic 64x64 shards
// (raw and JPEG) first. Several frame dtypes (and --repeat) alternate per configuration, so A/B
// figures come from interleaved runs. cpu_us_per_image is the process's CPU time (all threads)
// per image over the timed window. --reads memory: the shards held in shared memory (--in-memory).
import { mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Loader } from '../src/pipeline/loader/loader.ts';
import { resolveRank } from '../src/shared/launcher-env.ts';
import { syntheticShards } from './synthetic-shards.ts';

const { values: v } = parseArgs({
  options: {
    data: { type: 'string' },
    encoding: { type: 'string' },
    workers: { type: 'string' },
    'batch-size': { type: 'string' },
    mode: { type: 'string', default: 'train' },
    images: { type: 'string', default: '32768' },
    'min-seconds': { type: 'string', default: '4' },
    'target-rate': { type: 'string', default: '400000' },
    rank: { type: 'string' },
    world: { type: 'string' },
    'frame-dtype': { type: 'string', default: 'float32' },
    repeat: { type: 'string', default: '1' },
    reads: { type: 'string', default: 'file' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (v.help) {
  process.stdout.write(`npm run bench -- pipeline [--data <index.json>] [--encoding raw,jpeg] [--workers 1,2] [--batch-size 1024,16384]
  [--mode train|eval] [--images 32768] [--min-seconds 4] [--target-rate 400000] [--rank R --world W]
  [--frame-dtype float32,uint8] [--reads file,memory] [--repeat 1]
--reads memory holds the shards in shared memory (the loader's --in-memory) instead of reading each
sample from the file. Prints {bench:"pipeline", encoding, frame_dtype, reads, workers, batch_size, images_per_sec, images_per_sec_per_worker,
cores_for_target, ...} per configuration; --target-rate is the trainer's appetite in images/s
(default 400,000: a modern GPU on B_12-Wi_1024 at 64x64, see shared notes).\n`);
  process.exit(0);
}
const cores = availableParallelism();
const list = (s: string | undefined, dflt: string): string[] => (s ?? dflt).split(',').filter(Boolean);
const workerCounts = list(v.workers, Array.from({ length: cores }, (_, i) => i + 1).join(',')).map(Number);
const batchSizes = list(v['batch-size'], '1024,16384').map(Number);
const target = Number(v['target-rate']);
// One rank's share (flags, else the launcher's environment): what each of W loaders delivers.
const { rank, world } = resolveRank({ rank: v.rank, world: v.world });
const minSeconds = Number(v['min-seconds']);
const frameDtypes = list(v['frame-dtype'], 'float32');
for (const d of frameDtypes) if (d !== 'float32' && d !== 'uint8') throw new Error(`--frame-dtype: float32 or uint8, got ${d}`);
const repeat = Number(v.repeat);
const readModes = list(v.reads, 'file');
for (const r of readModes) if (r !== 'file' && r !== 'memory') throw new Error(`--reads: file or memory, got ${r}`);
const tmp = mkdtempSync(join(tmpdir(), 'bench-pipeline-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

async function dataset(encoding: string): Promise<string> {
  const out = join(tmp, encoding);
  await syntheticShards(out, Number(v.images), encoding as 'raw' | 'jpeg');
  return out;
}

const cases = v.data
  ? [{ encoding: v.encoding ?? 'given', data: v.data }]
  : await Promise.all(list(v.encoding, 'raw,jpeg').map(async (e) => ({ encoding: e, data: await dataset(e) })));
for (const c of cases) {
  for (const batchSize of batchSizes) {
    for (const workers of workerCounts)
      for (let rep = 0; rep < repeat; rep++)
        for (const reads of readModes)
          for (const frameDtype of frameDtypes as ('float32' | 'uint8')[]) {
            const loader = await Loader.open({
              data: c.data,
              batchSize,
              mode: v.mode as 'train' | 'eval',
              workers,
              frameDtype,
              rank,
              world,
              inMemory: reads === 'memory',
            });
            // Warm-up: thread start, JIT, page cache.
            let epoch = 0;
            for await (const b of loader.epoch(epoch++)) b.release();
            let images = 0;
            const c0 = process.cpuUsage();
            const t0 = performance.now();
            while ((performance.now() - t0) / 1000 < minSeconds) {
              for await (const b of loader.epoch(epoch++)) {
                images += b.n;
                b.release();
              }
            }
            const seconds = (performance.now() - t0) / 1000;
            const cpu = process.cpuUsage(c0);
            const rate = images / seconds;
            process.stdout.write(
              `${JSON.stringify({
                bench: 'pipeline',
                ...(world > 1 ? { rank, world } : {}),
                encoding: c.encoding,
                frame_dtype: frameDtype,
                reads,
                mode: v.mode,
                workers,
                batch_size: batchSize,
                res: loader.info.res,
                images,
                seconds: Number(seconds.toFixed(2)),
                images_per_sec: Math.round(rate),
                images_per_sec_per_worker: Math.round(rate / workers),
                // CPU time of the whole process (workers and main thread) per image: on a machine
                // shared with other jobs, steadier than the rate, which also counts time spent
                // waiting for a core.
                cpu_us_per_image: Number(((cpu.user + cpu.system) / images).toFixed(2)),
                cores_for_target: Math.ceil(target / (rate / workers)),
                target_rate: target,
                ring_mib: Math.round(loader.memory.ringBytes / 2 ** 20),
                cores,
              })}\n`,
            );
            await loader.close();
          }
  }
}
