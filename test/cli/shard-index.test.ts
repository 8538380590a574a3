// train, eval and `loader dump` on a shard whose .idx does not match the tar (label offsets
// shifted by one sample, a wrong size, an offset into the middle of the data): exit 1 with a
// message naming the shard, the offset and the sample key, and no result printed. On the intact
// dataset the same commands succeed. In process (the exit code the entry points return), and
// through the real entry points once each.
import { spawn } from 'node:child_process';
import { cpSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { EXIT } from '../../src/cli/command.ts';
import { runEvalCli } from '../../src/cli/eval-main.ts';
import { openEvalFeed, openTrainFeeds } from '../../src/cli/feeds.ts';
import { PRETRAIN_AUGMENT } from '../../src/pipeline/augment/settings.ts';
import { runTrainCli } from '../../src/cli/train-main.ts';
import { runShardJob } from '../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../src/pipeline/sources/synthetic.ts';
import { editIdx, member } from '../helpers/damage-shards.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from '../model/setup.ts';
import { captureIo } from './helpers.ts';

await useBackend('cpu');

const root = tempDir(t);
const repo = new URL('../../', import.meta.url).pathname;
const pristine = join(root, 'ds');
// 16x16 pixels: a 896-byte .npy spans two tar blocks, so an offset can point into its middle.
await runShardJob(openSynthetic({ count: 48, numClasses: 4, width: 16, height: 16, seed: 6 }), {
  out: pristine,
  res: 16,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: 16,
  workers: 1,
  seed: 6,
  split: 'train',
  valFraction: 0,
  command: 't',
});
const CK = join(root, 'ck');
const COMMON = ['--backend', 'cpu', '--workers', '1', '--batch-size', '16'];
const trainArgs = (data: string, out: string): string[] => ['--data', data, '--arch', 'B_1-Wi_16', '--epochs', '1', '--out', out, ...COMMON];
const evalArgs = (data: string): string[] => ['--checkpoint', CK, '--data', data, ...COMMON];
const makeFeeds = (o: Parameters<typeof openTrainFeeds>[0]) => openTrainFeeds(o, o.res, PRETRAIN_AUGMENT);

function runEntry(file: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(repo, 'src/cli', file), ...args], { cwd: repo, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('the intact dataset trains and evaluates', async (t) => {
  const c = captureIo();
  t.equal(await runTrainCli(trainArgs(join(pristine, 'index.json'), CK), makeFeeds, c), EXIT.ok, c.err.join(''));
  const e = captureIo();
  t.equal(await runEvalCli(evalArgs(join(pristine, 'index.json')), openEvalFeed, e), EXIT.ok, e.err.join(''));
  t.match(JSON.parse(e.out.join('')), { samples: 48, valid: true });
});

const damages: { name: string; shard: string; edit: Parameters<typeof editIdx>[1]; detail: RegExp }[] = [
  {
    name: 'label offsets shifted by one sample',
    shard: 'train-000001',
    edit: (s) => {
      for (let i = 0; i + 1 < s.length; i++) member(s[i]!, 'cls').offset = member(s[i + 1]!, 'cls').offset;
    },
    detail: /member \.cls\): the member there is "\d{9}\.cls", the index says "\d{9}\.cls"/,
  },
  {
    name: 'a wrong size',
    shard: 'train-000002',
    edit: (s) => {
      for (const x of s) member(x, 'npy').size = 895;
    },
    detail: /member \.npy\): its tar header says 896 bytes, the index 895/,
  },
  {
    name: 'an offset into the middle of the data',
    shard: 'train-000000',
    edit: (s) => {
      for (const x of s) member(x, 'npy').offset += 512;
    },
    detail: /member \.npy\): no valid tar header precedes it/,
  },
];

for (const d of damages) {
  t.test(`${d.name}: train, eval and loader dump exit 1 naming the shard, offset and key`, async (t) => {
    const ds = join(root, d.shard);
    cpSync(pristine, ds, { recursive: true });
    editIdx(join(ds, `${d.shard}.idx`), d.edit);
    const data = join(ds, 'index.json');
    const message = (cmd: string): RegExp =>
      new RegExp(
        `${cmd}: LoaderError: ${join(ds, `${d.shard}.tar`).replace(/[.]/g, '\\.')}: the index does not match the tar at offset \\d+ \\(sample "\\d{9}", ${d.detail.source}`,
      );
    const c = captureIo();
    t.equal(await runTrainCli(trainArgs(data, join(root, `run-${d.shard}`)), makeFeeds, c), EXIT.failure);
    t.match(c.err.join(''), message('train'));
    t.equal(c.out.join(''), '', 'train: no summary');
    const e = captureIo();
    t.equal(await runEvalCli(evalArgs(data), openEvalFeed, e), EXIT.failure);
    t.match(e.err.join(''), message('eval'));
    t.equal(e.out.join(''), '', 'eval: no result');
    const dump = await runEntry('loader.ts', ['dump', '--data', data, '--out', join(root, `${d.shard}.bin`), ...COMMON.slice(2)]);
    t.equal(dump.code, 1, dump.stderr);
    t.match(dump.stderr, message('loader'));
    t.equal(dump.stdout, '');
  });
}

t.test('the real train and eval entry points exit 1 on a shifted .idx', async (t) => {
  const ds = join(root, 'train-000001');
  const [train, ev] = await Promise.all([
    runEntry('train.ts', [...trainArgs(join(ds, 'index.json'), join(root, 'run-entry')), '--quiet']),
    runEntry('eval.ts', evalArgs(join(ds, 'index.json'))),
  ]);
  t.equal(train.code, 1, train.stderr);
  t.match(train.stderr, /train: LoaderError: .*train-000001\.tar: the index does not match the tar at offset \d+ \(sample "\d{9}", member \.cls\)/);
  t.equal(ev.code, 1, ev.stderr);
  t.match(ev.stderr, /eval: LoaderError: .*train-000001\.tar: the index does not match the tar at offset \d+ \(sample "\d{9}", member \.cls\)/);
  t.equal(ev.stdout, '');
});
