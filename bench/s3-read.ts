// Remote shards for the global shuffle: whole-shard download into the local cache then positioned
// reads, against one ranged GET per sample, from an S3-compatible server (s3rver, in its own
// process) on 127.0.0.1. The global shuffle reads every sample once per epoch in random order, so
// the default reads all of them (one epoch); --reads N reads N random samples instead.
// Rounds alternate the two ways (and the ranged concurrencies) so they see the same machine load;
// the median round is reported. Also: upload (multipart) and download rates in MB/s against a
// local file copy of the same bytes measured in the same run.
//   npm run bench -- s3-read [--shards 4] [--samples-per-shard 1000] [--res 64] [--reads all]
//                            [--concurrency 1,8,32] [--rounds 3]
import { closeSync, copyFileSync, mkdtempSync, openSync, readdirSync, readSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildSampleTable } from '../src/pipeline/loader/sample-table.ts';
import { ShardCache } from '../src/pipeline/loader/shard-cache.ts';
import { runShardJob } from '../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../src/pipeline/sources/synthetic.ts';
import { getObjectBytes, s3Client, uploadFile } from '../src/shared/s3.ts';
import { startBenchS3Server } from './s3-server.ts';

const { values: v } = parseArgs({
  options: {
    shards: { type: 'string', default: '4' },
    'samples-per-shard': { type: 'string', default: '1000' },
    res: { type: 'string', default: '64' },
    reads: { type: 'string', default: 'all' },
    concurrency: { type: 'string', default: '1,8,32' },
    rounds: { type: 'string', default: '3' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (v.help) {
  process.stdout.write('npm run bench -- s3-read [--shards 4] [--samples-per-shard 1000] [--res 64] [--reads all|N] [--concurrency 1,8,32] [--rounds 3]\n');
  process.exit(0);
}
const shards = Number(v.shards);
const perShard = Number(v['samples-per-shard']);
const res = Number(v.res);
const rounds = Number(v.rounds);
const concurrencies = v.concurrency!.split(',').map(Number);
const work = mkdtempSync(join(tmpdir(), 'smlp-bench-s3-'));
const line = (o: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify({ bench: 's3-read', ...o })}\n`);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

const server = await startBenchS3Server(join(work, 's3'));

try {
  // Shards as the shard job writes them: raw 64x64 uint8 (the paper's storage), seeded.
  const local = join(work, 'shards');
  process.stderr.write(`making ${shards} x ${perShard} samples at ${res}x${res}...\n`);
  await runShardJob(openSynthetic({ count: shards * perShard, numClasses: 10, width: res, height: res, seed: 1 }), {
    out: local,
    res,
    resize: 'max-side',
    encoding: 'raw',
    quality: 90,
    samplesPerShard: perShard,
    workers: 1,
    seed: 1,
    split: 'train',
    valFraction: 0,
    command: 'bench',
  });
  const tars = readdirSync(local)
    .filter((n) => n.endsWith('.tar'))
    .sort();
  const paths = tars.map((n) => join(local, n));
  const bytes = paths.reduce((s, p) => s + statSync(p).size, 0);
  const mb = bytes / 1e6;
  const table = await buildSampleTable(paths);
  // One range per sample: its label and image members, adjacent in the tar (as the loader reads them).
  const ranges = Array.from({ length: table.count }, (_, i) => {
    const start = Math.min(table.labelOffset[i]!, table.imageOffset[i]!);
    const end = Math.max(table.labelOffset[i]! + table.labelSize[i]!, table.imageOffset[i]! + table.imageSize[i]!);
    return { shard: table.shard[i]!, offset: start, length: end - start };
  });
  const reads = v.reads === 'all' ? table.count : Math.min(Number(v.reads), table.count);
  line({ what: 'setup', shards: tars.length, samples: table.count, shard_mb: r3(mb / tars.length), bytes_per_sample_read: ranges[0]!.length, reads });

  // Upload (multipart, 16 MiB parts) vs a local copy of the same files.
  const up: number[] = [];
  const copy: number[] = [];
  for (let r = 0; r < rounds; r++) {
    let t0 = performance.now();
    for (let i = 0; i < tars.length; i++) await uploadFile(paths[i]!, `s3://bench/r${r}/${tars[i]}`);
    up.push((performance.now() - t0) / 1000);
    t0 = performance.now();
    for (const p of paths) copyFileSync(p, `${p}.copy`);
    copy.push((performance.now() - t0) / 1000);
    for (const p of paths) rmSync(`${p}.copy`);
  }
  const upMBs = mb / median(up);
  const copyMBs = mb / median(copy);
  line({ what: 'upload', mb: r3(mb), mb_per_s: r3(upMBs), local_copy_mb_per_s: r3(copyMBs), ratio_to_local_copy: r3(upMBs / copyMBs) });

  // A seeded random order of `reads` samples (the global shuffle's access pattern).
  let seed = 12345;
  const order = Array.from({ length: table.count }, (_, i) => i);
  for (let i = order.length - 1; i > 0; i--) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const j = seed % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const picked = order.slice(0, reads);
  const urls = tars.map((n) => `s3://bench/r0/${n}`);

  async function whole(round: number): Promise<{ download: number; read: number }> {
    const cache = ShardCache.at(join(work, `cache-${round}`), Number.POSITIVE_INFINITY);
    const t0 = performance.now();
    const got = await cache.fetchAll(urls.map((url) => ({ url })));
    const t1 = performance.now();
    const fds = got.map((g) => openSync(g.path, 'r'));
    const buf = Buffer.alloc(Math.max(...ranges.map((r) => r.length)));
    let sum = 0;
    for (const i of picked) {
      const r = ranges[i]!;
      readSync(fds[r.shard]!, buf, 0, r.length, r.offset);
      sum += buf[r.length - 1]!;
    }
    const t2 = performance.now();
    for (const fd of fds) closeSync(fd);
    for (const g of got) cache.release(g);
    rmSync(join(work, `cache-${round}`), { recursive: true, force: true });
    if (sum < 0) throw new Error('unreachable');
    return { download: (t1 - t0) / 1000, read: (t2 - t1) / 1000 };
  }

  async function ranged(concurrency: number): Promise<number> {
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < picked.length) {
          const r = ranges[picked[next++]!]!;
          await getObjectBytes(urls[r.shard]!, { range: { offset: r.offset, length: r.length } });
        }
      }),
    );
    return (performance.now() - t0) / 1000;
  }

  // The SDK's default pool has 50 sockets: enough for the concurrencies measured here.
  await s3Client();
  const W = { download: [] as number[], read: [] as number[] };
  const R = new Map<number, number[]>(concurrencies.map((c) => [c, []]));
  for (let r = 0; r < rounds; r++) {
    process.stderr.write(`round ${r + 1}/${rounds}\n`);
    const w = await whole(r);
    W.download.push(w.download);
    W.read.push(w.read);
    for (const c of r % 2 ? [...concurrencies].reverse() : concurrencies) R.get(c)!.push(await ranged(c));
  }
  const dl = median(W.download);
  const rd = median(W.read);
  const wholeTotal = dl + rd;
  line({
    what: 'whole-shard',
    download_s: r3(dl),
    download_mb_per_s: r3(mb / dl),
    download_ratio_to_local_copy: r3(mb / dl / copyMBs),
    local_reads_s: r3(rd),
    total_s: r3(wholeTotal),
    samples_per_s: Math.round(reads / wholeTotal),
  });
  for (const c of concurrencies) {
    const s = median(R.get(c)!);
    line({
      what: 'ranged',
      concurrency: c,
      seconds: r3(s),
      samples_per_s: Math.round(reads / s),
      gets: reads,
      mb_transferred: r3((reads * ranges[0]!.length) / 1e6),
      ratio_to_whole: r3(wholeTotal / s),
      rounds: R.get(c)!.map(r3),
    });
  }
} finally {
  server.child.kill();
  rmSync(work, { recursive: true, force: true });
}
