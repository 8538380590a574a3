// Shards on S3-compatible object storage, end to end: the shard job's output uploaded with the
// object-storage module to a real server on 127.0.0.1, then `loader dump`, `train`, `finetune` and
// `eval` reading s3:// exactly as they read the local folder (same frames, same losses), the
// cache reused by a second run, and the failures (wrong md5, missing bucket, object or shard,
// wrong credentials, a dataset over the cache limit) as clear errors naming the URL.
import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { EVAL_HELP, runEvalCli } from '../../src/cli/eval-main.ts';
import { SERVE_HELP } from '../../src/cli/loader-serve.ts';
import { HELP as TRAIN_HELP } from '../../src/cli/train-flags.ts';
import { openEvalFeed, openTrainFeeds, PRETRAIN_CROP } from '../../src/cli/feeds.ts';
import { FINETUNE_HELP, runFinetuneCli } from '../../src/cli/finetune-main.ts';
import { runTrainCli } from '../../src/cli/train-main.ts';
import { cacheName } from '../../src/pipeline/loader/shard-cache.ts';
import { runShardJob } from '../../src/pipeline/shard/shard-job.ts';
import { openWebDataset } from '../../src/pipeline/sources/webdataset-source.ts';
import { putObject, uploadFile } from '../../src/shared/s3.ts';
import { childEnv, startS3Server, useS3Env } from '../helpers/s3-server.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from '../model/setup.ts';
import { captureIo, makeShards } from './helpers.ts';

await useBackend('wasm');
const root = tempDir(t);
const s3 = await startS3Server(t);
useS3Env(t, s3.env);

// The shard job's output, as it writes it locally, uploaded file by file.
const TRAIN = await makeShards(join(root, 'train'), { count: 96, numClasses: 4, res: 8, seed: 1 });
const VAL = await makeShards(join(root, 'val'), { count: 48, numClasses: 4, res: 8, seed: 7 });
async function uploadDir(dir: string, prefix: string): Promise<string[]> {
  const names = readdirSync(dir).filter((n) => statSync(join(dir, n)).isFile());
  for (const n of names) await uploadFile(join(dir, n), `${prefix}/${n}`);
  return names;
}
const trainFiles = await uploadDir(join(root, 'train'), 's3://bkt/ds/train');
await uploadDir(join(root, 'val'), 's3://bkt/ds/val');
const TARS = trainFiles.filter((n) => n.endsWith('.tar'));
const tarGets = (): number => TARS.reduce((s, n) => s + s3.gets('bkt', `ds/train/${n}`).length, 0);

const repo = new URL('../../', import.meta.url).pathname;
/** The loader command as a child process (asynchronously: the S3 server runs in this process). */
function loaderCli(args: string[], env: Record<string, string | undefined>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(repo, 'src/cli/loader.ts'), ...args], {
      cwd: repo,
      env: childEnv({ ...s3.env, ...env }),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
const dumpArgs = (data: string, out: string): string[] => ['dump', '--data', data, '--batches', '3', '--batch-size', '16', '--out', out, '--workers', '1'];

t.test('loader dump from s3:// gives the same frames as from the local folder; a second run downloads nothing', async (t) => {
  const cache = join(root, 'cache-dump');
  const local = await loaderCli(dumpArgs(TRAIN, join(root, 'local.bin')), {});
  t.equal(local.code, 0, local.stderr);
  const first = await loaderCli(dumpArgs('s3://bkt/ds/train/index.json', join(root, 's3.bin')), { SMLP_SHARD_CACHE: cache });
  t.equal(first.code, 0, first.stderr);
  t.ok(readFileSync(join(root, 's3.bin')).equals(readFileSync(join(root, 'local.bin'))), 'byte-identical frames');
  t.match(first.stderr, new RegExp(`remote shards: ${TARS.length} downloaded \\([\\d.]+ MB, [\\d.]+ MB/s\\), 0 from the cache`));
  t.equal(tarGets(), TARS.length, 'each shard fetched once');
  // The folder form, as a local folder: its index.json.
  const second = await loaderCli(dumpArgs('s3://bkt/ds/train', join(root, 's3-again.bin')), { SMLP_SHARD_CACHE: cache });
  t.equal(second.code, 0, second.stderr);
  t.match(second.stderr, new RegExp(`remote shards: 0 downloaded \\(0.0 MB\\), ${TARS.length} from the cache`));
  t.equal(tarGets(), TARS.length, 'no shard fetched again');
  t.ok(readFileSync(join(root, 's3-again.bin')).equals(readFileSync(join(root, 'local.bin'))));
  t.same(readdirSync(join(cache, '.inuse')), [], 'no in-use marks left behind');
});

const COMMON = [
  '--arch',
  'B_1-Wi_16',
  '--batch-size',
  '16',
  '--workers',
  '1',
  '--backend',
  'wasm',
  '--frame-dtype',
  'float32',
  '--checkpoint-every',
  '0',
  '--quiet',
];
type Summary = { lastTrainLoss: number; lastEval: { top1: number; loss: number }; globalStep: number };

t.test('train, finetune and eval from s3:// match the same runs on the local folder', async (t) => {
  process.env['SMLP_SHARD_CACHE'] = join(root, 'cache-train');
  t.teardown(() => void delete process.env['SMLP_SHARD_CACHE']);
  const train = async (data: string, val: string, out: string): Promise<Summary> => {
    const c = captureIo();
    const code = await runTrainCli(
      ['--data', data, '--val', val, '--epochs', '2', '--lr', '3e-3', '--out', out, ...COMMON],
      (o) => openTrainFeeds(o, o.res, PRETRAIN_CROP),
      c,
    );
    t.equal(code, 0, c.err.join(''));
    return JSON.parse(c.out.join('')) as Summary;
  };
  const local = await train(TRAIN, VAL, join(root, 'run-local'));
  const remote = await train('s3://bkt/ds/train/index.json', 's3://bkt/ds/val/index.json', join(root, 'run-s3'));
  t.equal(remote.globalStep, 12, '96 samples / 16 x 2 epochs');
  t.equal(remote.lastTrainLoss, local.lastTrainLoss, 'same last training loss');
  t.same([remote.lastEval.loss, remote.lastEval.top1], [local.lastEval.loss, local.lastEval.top1], 'same validation');

  const evalOn = async (data: string): Promise<{ top1: number; loss: number; samples: number }> => {
    const c = captureIo();
    const code = await runEvalCli(
      ['--checkpoint', join(root, 'run-s3'), '--data', data, '--batch-size', '16', '--workers', '1', '--backend', 'wasm', '--frame-dtype', 'float32'],
      openEvalFeed,
      c,
    );
    t.equal(code, 0, c.err.join(''));
    return JSON.parse(c.out.join('')) as { top1: number; loss: number; samples: number };
  };
  const evLocal = await evalOn(VAL);
  const evS3 = await evalOn('s3://bkt/ds/val/');
  t.equal(evS3.samples, 48);
  t.same([evS3.top1, evS3.loss], [evLocal.top1, evLocal.loss], 'eval from s3:// = eval from the folder');

  const c = captureIo();
  const code = await runFinetuneCli(
    [
      '--checkpoint',
      join(root, 'run-s3'),
      '--mode',
      'linear',
      '--data',
      's3://bkt/ds/val/index.json',
      '--epochs',
      '1',
      '--out',
      join(root, 'ft-s3'),
      ...COMMON.filter((a) => a !== 'B_1-Wi_16' && a !== '--arch'),
    ],
    (o) => openTrainFeeds(o, o.res, o.crop),
    c,
  );
  t.equal(code, 0, c.err.join(''));
  t.match(JSON.parse(c.out.join('')), { finetune: { mode: 'linear' }, globalStep: 3 });
});

t.test("the shard job's webdataset source reads s3:// too: re-sharding gives the same shards as from the folder", async (t) => {
  const reshard = async (index: string, out: string): Promise<string[]> => {
    await runShardJob(await openWebDataset([index]), {
      out,
      res: 8,
      resize: 'max-side',
      encoding: 'raw',
      quality: 90,
      samplesPerShard: 40,
      workers: 1,
      seed: 3,
      split: 'train',
      valFraction: 0,
      command: 'test',
    });
    return (JSON.parse(readFileSync(join(out, 'index.json'), 'utf8')) as { shardlist: { md5sum: string }[] }).shardlist.map((e) => e.md5sum);
  };
  const fromS3 = await reshard('s3://bkt/ds/train/index.json', join(root, 'reshard-s3'));
  t.equal(fromS3.length, 3, '96 samples in shards of 40');
  t.same(fromS3, await reshard(TRAIN, join(root, 'reshard-local')));
});

t.test('--help of the commands that read shards mentions s3:// beside http(s)://', async (t) => {
  for (const [name, help] of Object.entries({ TRAIN_HELP, FINETUNE_HELP, EVAL_HELP, SERVE_HELP })) t.match(help, /http\(s\):\/\/,? (or )?s3:\/\//, name);
  const dump = await loaderCli(['--help'], {});
  t.match(dump.stdout, /http\(s\):\/\/, s3:\/\/bucket\/key/, 'loader --help');
});

t.test('failures are clear errors naming the URL', async (t) => {
  const out = join(root, 'x.bin');
  const cache = join(root, 'cache-errors');
  const run = async (data: string, env: Record<string, string | undefined> = {}): Promise<string> => {
    const r = await loaderCli(dumpArgs(data, out), { SMLP_SHARD_CACHE: cache, ...env });
    t.equal(r.code, 1, `fails: ${data}`);
    return r.stderr;
  };
  // An index whose first shard's md5 is wrong (the shard itself is fine).
  const index = JSON.parse(readFileSync(TRAIN, 'utf8')) as { shardlist: { url: string; md5sum: string }[] };
  index.shardlist[0]!.md5sum = '0'.repeat(32);
  await putObject('s3://bkt/ds/train/bad-md5.json', JSON.stringify(index));
  t.match(
    await run('s3://bkt/ds/train/bad-md5.json'),
    /loader: ShardChecksumError: s3:\/\/bkt\/ds\/train\/train-000000\.tar: md5 mismatch after download: the index says 0{32}/,
  );
  t.match(
    await run('s3://no-such-bucket/ds/index.json'),
    /UrlError: cannot fetch wids index: cannot read object: the bucket does not exist \(url "s3:\/\/no-such-bucket\/ds\/index\.json"\)/,
  );
  t.match(
    await run('s3://bkt/nothing/index.json'),
    /UrlError: cannot fetch wids index: cannot read object: no such object \(url "s3:\/\/bkt\/nothing\/index\.json"\)/,
  );
  // The index is there, its shards are not.
  await putObject('s3://bkt/partial/index.json', readFileSync(TRAIN));
  t.match(await run('s3://bkt/partial/index.json'), /UrlError: cannot read object: no such object \(url "s3:\/\/bkt\/partial\/train-00000\d\.tar"\)/);
  t.match(
    await run('s3://bkt/ds/train/index.json', { AWS_ACCESS_KEY_ID: 'WRONGKEY' }),
    /access refused \(InvalidAccessKeyId.*\(url "s3:\/\/bkt\/ds\/train\/index\.json"\)/,
  );
  t.match(
    await run('s3://bkt/ds/train/index.json', { SMLP_SHARD_CACHE_MAX: '10K' }),
    /ShardCacheLimitError: s3:\/\/bkt\/ds\/train\/index\.json: the dataset's \d+ remote shards take \d+ bytes, more than SMLP_SHARD_CACHE_MAX \(10240 bytes\)/,
  );
  t.match(await run('s3://bkt/ds/train/index.json', { SMLP_SHARD_CACHE_MAX: 'lots' }), /SMLP_SHARD_CACHE_MAX "lots" is not a byte count/);
});

t.test(
  'a cache limit below two datasets: the second run evicts part of the first to stay under it (the LRU order is checked in shard-cache.test.ts)',
  async (t) => {
    const cache = join(root, 'cache-evict');
    const sizes = (dir: string): number => TARS.reduce((s, n) => s + statSync(join(dir, n)).size, 0);
    const limit = sizes(join(root, 'train')) + 1024; // the training set, and then some
    const env = { SMLP_SHARD_CACHE: cache, SMLP_SHARD_CACHE_MAX: String(limit) };
    const a = await loaderCli(dumpArgs('s3://bkt/ds/train/index.json', join(root, 'e1.bin')), env);
    t.equal(a.code, 0, a.stderr);
    const b = await loaderCli(dumpArgs('s3://bkt/ds/val/index.json', join(root, 'e2.bin')), env);
    t.equal(b.code, 0, b.stderr);
    t.match(b.stderr, /remote shards: \d+ downloaded .*, 0 from the cache, \d+ evicted \([\d.]+ MB\)/);
    const held = readdirSync(cache)
      .filter((n) => !n.startsWith('.'))
      .map((n) => statSync(join(cache, n)).size)
      .reduce((s, x) => s + x, 0);
    t.ok(held <= limit, `the cache holds ${held} bytes, under its limit ${limit}`);
    const entries = (index: string, prefix: string): string[] =>
      (JSON.parse(readFileSync(index, 'utf8')) as { shardlist: { url: string; md5sum: string }[] }).shardlist.map((e) =>
        cacheName(`${prefix}/${e.url}`, e.md5sum),
      );
    const present = new Set(readdirSync(cache));
    const val = entries(VAL, 's3://bkt/ds/val');
    const train = entries(TRAIN, 's3://bkt/ds/train');
    t.ok(
      val.every((n) => present.has(n)),
      'all of the second dataset is there',
    );
    const kept = train.filter((n) => present.has(n)).length;
    t.ok(kept < train.length && kept > 0, `part of the first dataset was evicted (${kept} of ${train.length} kept)`);
  },
);
