// The shard job writing to S3 (--out s3://, an S3OutputStore) against writing to a local folder,
// same input, same process, rounds interleaved (local, s3, local, s3 ...) so both see the same
// machine load; the median round is reported as images/s, MB/s and the ratio s3/local. Then
// `loader dump` (a child process) reading that output: from the local folder, and from s3://
// with an empty shard cache (every shard downloaded), interleaved the same way. The server is
// s3rver on 127.0.0.1 in its own process (a real store adds network latency and bandwidth limits;
// this measures the client-side cost: staging, upload, per-shard requests).
//   npm run bench -- s3-write [--count 4000] [--samples-per-shard 500] [--res 64] [--workers 2] [--rounds 3] [--batches 40]
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { S3OutputStore } from '../src/pipeline/shard/s3-output-store.ts';
import { runShardJob, type ShardJobOptions } from '../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../src/pipeline/sources/synthetic.ts';
import { startBenchS3Server } from './s3-server.ts';

const { values: v } = parseArgs({
  options: {
    count: { type: 'string', default: '4000' },
    'samples-per-shard': { type: 'string', default: '500' },
    res: { type: 'string', default: '64' },
    workers: { type: 'string', default: '2' },
    rounds: { type: 'string', default: '3' },
    batches: { type: 'string', default: '40' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (v.help) {
  process.stdout.write('npm run bench -- s3-write [--count 4000] [--samples-per-shard 500] [--res 64] [--workers 2] [--rounds 3] [--batches 40]\n');
  process.exit(0);
}
const count = Number(v.count);
const res = Number(v.res);
const rounds = Number(v.rounds);
const work = mkdtempSync(join(tmpdir(), 'smlp-bench-s3w-'));
const line = (o: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify({ bench: 's3-write', ...o })}\n`);
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const r3 = (x: number): number => Math.round(x * 1000) / 1000;

const server = await startBenchS3Server(join(work, 's3'));

const options = (out: string): ShardJobOptions => ({
  out,
  res,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: Number(v['samples-per-shard']),
  workers: Number(v.workers),
  seed: 0,
  split: 'train',
  valFraction: 0,
  command: 'bench s3-write',
});
const source = () => openSynthetic({ count, numClasses: 10, width: res, height: res, seed: 1 });

const write: Record<'local' | 's3', { ips: number; mbps: number }[]> = { local: [], s3: [] };
let lastLocal = '';
let lastS3 = '';
try {
  for (let r = 0; r < rounds; r++) {
    for (const kind of ['local', 's3'] as const) {
      const out = kind === 'local' ? join(work, `local-${r}`) : `s3://bench/out-${r}`;
      const o = options(out);
      const s = await runShardJob(source(), kind === 's3' ? { ...o, store: new S3OutputStore(out) } : o);
      const bytes = s.splits.reduce((a, x) => a + x.bytes, 0);
      write[kind].push({ ips: s.processed / s.seconds, mbps: bytes / 1e6 / s.seconds });
      if (kind === 'local') lastLocal = join(out, 'index.json');
      else lastS3 = `${out}/index.json`;
    }
  }
  const w = (k: 'local' | 's3') => ({ ips: median(write[k].map((x) => x.ips)), mbps: median(write[k].map((x) => x.mbps)) });
  const L = w('local');
  const S = w('s3');
  line({
    what: 'shard-write',
    count,
    res,
    rounds,
    local_images_per_s: Math.round(L.ips),
    s3_images_per_s: Math.round(S.ips),
    local_mb_per_s: r3(L.mbps),
    s3_mb_per_s: r3(S.mbps),
    ratio_s3_to_local: r3(S.ips / L.ips),
  });

  // Reading: loader dump of --batches batches of 64 from the local folder and from s3:// (empty cache).
  const batches = v.batches!;
  const read: Record<'local' | 's3', number[]> = { local: [], s3: [] };
  for (let r = 0; r < rounds; r++) {
    for (const kind of ['local', 's3'] as const) {
      const cache = join(work, `cache-${r}-${kind}`);
      const t0 = performance.now();
      const p = spawnSync(
        process.execPath,
        [
          '--import',
          'tsx',
          new URL('../src/cli/loader.ts', import.meta.url).pathname,
          'dump',
          '--data',
          kind === 'local' ? lastLocal : lastS3,
          '--batches',
          batches,
          '--batch-size',
          '64',
          '--out',
          join(work, 'dump.bin'),
          '--workers',
          '1',
        ],
        { env: { ...process.env, SMLP_SHARD_CACHE: cache }, encoding: 'utf8' },
      );
      if (p.status !== 0) throw new Error(p.stderr);
      read[kind].push((performance.now() - t0) / 1000);
    }
  }
  const imgs = Number(batches) * 64;
  const Lr = median(read.local);
  const Sr = median(read.s3);
  line({
    what: 'dump-read',
    images: imgs,
    local_s: r3(Lr),
    s3_cold_cache_s: r3(Sr),
    local_images_per_s: Math.round(imgs / Lr),
    s3_images_per_s: Math.round(imgs / Sr),
    ratio_s3_to_local: r3(Lr / Sr),
  });
} finally {
  server.child.kill();
  rmSync(work, { recursive: true, force: true });
}
