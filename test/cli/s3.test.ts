// Shards on S3-compatible object storage, end to end: the shard job's output uploaded with the
// object-storage module to a real server on 127.0.0.1, then `loader dump`, `train`, `finetune` and
// `eval` reading s3:// exactly as they read the local folder (same frames, same losses), the
// cache reused by a second run, and the shard job's webdataset source reading s3://.
// (Failures and eviction: s3-errors.test.ts.)
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { EVAL_HELP, runEvalCli } from '../../src/cli/eval-main.ts';
import { openEvalFeed, openTrainFeeds } from '../../src/cli/feeds.ts';
import { PRETRAIN_AUGMENT } from '../../src/pipeline/augment/settings.ts';
import { FINETUNE_HELP, runFinetuneCli } from '../../src/cli/finetune-main.ts';
import { SERVE_HELP } from '../../src/cli/loader-serve.ts';
import { HELP as TRAIN_HELP } from '../../src/cli/train-flags.ts';
import { runTrainCli } from '../../src/cli/train-main.ts';
import { runShardJob } from '../../src/pipeline/shard/shard-job.ts';
import { openWebDataset } from '../../src/pipeline/sources/webdataset-source.ts';
import { useBackend } from '../model/setup.ts';
import { captureIo, tinyRunFlags } from './helpers.ts';
import { dumpArgs, s3Dataset } from './s3-fixture.ts';

await useBackend('wasm');
const { root, TRAIN, VAL, TARS, tarGets, loaderCli } = await s3Dataset(t);

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

const COMMON = tinyRunFlags(16);
type Summary = { lastTrainLoss: number; lastEval: { top1: number; loss: number }; globalStep: number };

t.test('train, finetune and eval from s3:// match the same runs on the local folder', async (t) => {
  process.env['SMLP_SHARD_CACHE'] = join(root, 'cache-train');
  t.teardown(() => void delete process.env['SMLP_SHARD_CACHE']);
  const train = async (data: string, val: string, out: string): Promise<Summary> => {
    const c = captureIo();
    const code = await runTrainCli(
      ['--data', data, '--val', val, '--epochs', '2', '--lr', '3e-3', '--out', out, ...COMMON],
      (o) => openTrainFeeds(o, o.res, PRETRAIN_AUGMENT),
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
