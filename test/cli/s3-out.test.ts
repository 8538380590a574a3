// `--out s3://bucket/prefix` for the shard job, against a real S3-compatible server on 127.0.0.1:
// a whole-job run gives the objects a local run gives as files (byte for byte); tasks run in any
// order, one killed half-way and rerun, then the merge, give the same; training and `loader dump`
// read the result; a missing bucket is refused before any work; a merge lists missing shards; a
// plan written to the bucket serves tasks that read their slice of it by range.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { openTrainFeeds } from '../../src/cli/feeds.ts';
import { PRETRAIN_AUGMENT } from '../../src/pipeline/augment/settings.ts';
import { runTrainCli } from '../../src/cli/train-main.ts';
import { getObjectBytes, listObjects } from '../../src/shared/s3.ts';
import { childEnv, startS3Server, useS3Env } from '../helpers/s3-server.ts';
import { outputFiles } from '../helpers/output-files.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from '../model/setup.ts';
import { captureIo, tinyRunFlags } from './helpers.ts';
import { dumpArgs } from './s3-fixture.ts';

const repo = new URL('../../', import.meta.url).pathname;
const s3 = await startS3Server(t);
useS3Env(t, s3.env);

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A CLI as a child process, asynchronously (the S3 server runs in this process). */
function cli(name: 'shard' | 'loader', args: string[], hooks: { started?: (kill: () => void) => void } = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = childEnv(s3.env);
    for (const k of Object.keys(env)) if (k === 'JOB_COMPLETION_INDEX' || k === 'SMLP_SHARD_TASKS' || k.startsWith('SLURM_')) delete env[k];
    const p = spawn(process.execPath, ['--import', 'tsx', join(repo, `src/cli/${name}.ts`), ...args], { cwd: repo, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    hooks.started?.(() => p.kill('SIGKILL'));
  });
}

/** outputFiles() of the objects under a prefix: md5 of each, the indexes' command blanked. */
async function objectFiles(prefix: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const o of await listObjects(`${prefix}/`)) {
    const rel = o.url.slice(prefix.length + 1);
    let bytes: Buffer = await getObjectBytes(o.url);
    if (/\.json$/.test(rel) && !rel.includes('/')) bytes = Buffer.from(bytes.toString('utf8').replace(/^( {4}"command": )".*"$/m, '$1""'));
    out[rel] = createHash('md5').update(bytes).digest('hex');
  }
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
}

const SYNTH = [
  'synthetic',
  '--count',
  '600',
  '--num-classes',
  '4',
  '--res',
  '8',
  '--samples-per-shard',
  '20',
  '--val-fraction',
  '0.2',
  '--workers',
  '1',
  '--quiet',
];
const root = tempDir(t);
const LOCAL = join(root, 'local');
const local = await cli('shard', [...SYNTH, '--out', LOCAL]);
if (local.code !== 0) throw new Error(local.stderr);
const REF = outputFiles(LOCAL);

t.test('a whole-job run to s3:// writes the objects a local run writes as files, byte for byte', async (t) => {
  const r = await cli('shard', [...SYNTH, '--out', 's3://bkt/whole']);
  t.equal(r.code, 0, r.stderr);
  t.same(await objectFiles('s3://bkt/whole'), REF, 'same names and bytes; no .partial/ or lock left');
  t.equal(JSON.parse(r.stdout).splits[0].index, 's3://bkt/whole/index.json');
  const puts = s3.requests.filter((q) => q.method === 'PUT' && q.url.startsWith('/bkt/whole/')).map((q) => q.url.split('?')[0]!.slice('/bkt/whole/'.length));
  const last = puts.filter((k) => !k.startsWith('.'));
  t.equal(last.at(-1), 'index.json', 'index.json is the last object written');
  t.ok(puts.indexOf('train-000000.tar') < puts.indexOf('train-000000.idx'), 'a tar before its idx');
  t.ok(puts.indexOf('train-000000.idx') < puts.indexOf('.partial/train-000000.tar.json'), '... and its idx before its record');
  const again = await cli('shard', [...SYNTH, '--out', 's3://bkt/whole']);
  t.equal(again.code, 0, again.stderr);
  t.equal(JSON.parse(again.stdout).state, 'complete', 'a second run finds it complete');
});

t.test('3 tasks to s3:// in shuffled order, one killed half-way and rerun, then merge: the bytes of one local run', async (t) => {
  const out = 's3://bkt/tasks';
  for (const i of [2, 0]) {
    const r = await cli('shard', [...SYNTH, '--out', out, '--task', `${i}/3`]);
    t.equal(r.code, 0, r.stderr);
  }
  // 24 train + 6 val shards; task 1 owns shards 10..19 of the 30: kill it as the first of its records is written (shards close
  // concurrently, so not necessarily shard 10's).
  const killed = await cli('shard', [...SYNTH, '--out', out, '--task', '1/3'], {
    // Killed once the server has stored that record (its PUT answered): the rerun then has at
    // least one complete shard to resume from, however slow either process is.
    started: (kill) => {
      let fired = false;
      s3.onResponse((q, status) => {
        if (fired || q.method !== 'PUT' || status !== 200 || !/^\/bkt\/tasks\/\.partial\/train-00001\d\.tar\.json/.test(q.url)) return;
        fired = true;
        kill();
      });
    },
  });
  t.equal(killed.signal, 'SIGKILL', 'killed, not finished');
  const merge1 = await cli('shard', ['merge', '--out', out]);
  t.equal(merge1.code, 1, 'merge refuses while shards are missing');
  t.match(merge1.stderr, /shards are not complete: .*train-00001\d\.tar \(task 1\).*run again task 1 of 3/);
  t.match(merge1.stderr, 's3://bkt/tasks');
  const rerun = await cli('shard', [...SYNTH, '--out', out, '--task', '1/3', '--quiet']);
  t.equal(rerun.code, 0, rerun.stderr);
  t.ok(JSON.parse(rerun.stdout).task.resumed >= 1, 'resumed from its complete shards');
  t.match(rerun.stderr, /took over the lock of task 1\/3 left by pid \d+ on .*: its process \d+ no longer runs/);
  const merged = await cli('shard', ['merge', '--out', out]);
  t.equal(merged.code, 0, merged.stderr);
  t.same(await objectFiles(out), REF, 'N tasks + merge to s3:// = one local run');
});

t.test('loader dump and train read the s3:// output as they read the local one', async (t) => {
  const cache = join(root, 'cache');
  const a = await cli('loader', dumpArgs(join(LOCAL, 'index.json'), join(root, 'local.bin')));
  t.equal(a.code, 0, a.stderr);
  process.env['SMLP_SHARD_CACHE'] = cache;
  t.teardown(() => void delete process.env['SMLP_SHARD_CACHE']);
  const b = await cli('loader', dumpArgs('s3://bkt/tasks/index.json', join(root, 's3.bin')));
  t.equal(b.code, 0, b.stderr);
  t.ok(readFileSync(join(root, 's3.bin')).equals(readFileSync(join(root, 'local.bin'))), 'byte-identical frames');

  await useBackend('wasm');
  const train = async (data: string, val: string, dir: string): Promise<{ lastTrainLoss: number; globalStep: number; lastEval: { loss: number } }> => {
    const c = captureIo();
    const code = await runTrainCli(
      ['--data', data, '--val', val, '--epochs', '1', '--lr', '3e-3', '--out', dir, ...tinyRunFlags(48)],
      (o) => openTrainFeeds(o, o.res, PRETRAIN_AUGMENT),
      c,
    );
    t.equal(code, 0, c.err.join(''));
    return JSON.parse(c.out.join(''));
  };
  const l = await train(join(LOCAL, 'index.json'), join(LOCAL, 'val.json'), join(root, 'run-local'));
  const r = await train('s3://bkt/tasks/index.json', 's3://bkt/tasks/val.json', join(root, 'run-s3'));
  t.equal(r.globalStep, 10, '480 samples / 48');
  t.equal(r.lastTrainLoss, l.lastTrainLoss, 'same last training loss');
  t.equal(r.lastEval.loss, l.lastEval.loss, 'same validation loss');
});

t.test('a missing bucket as --out is an error naming the URL, before any work', async (t) => {
  const before = s3.requests.length;
  const r = await cli('shard', [...SYNTH, '--out', 's3://no-such-bucket/ds']);
  t.equal(r.code, 1, r.stderr);
  t.match(r.stderr, /S3NoSuchBucketError: .*the bucket does not exist \(url "s3:\/\/no-such-bucket\/ds\/.*"\)/);
  t.notOk(
    s3.requests.slice(before).some((q) => q.method === 'PUT' || q.method === 'POST'),
    'nothing written',
  );
  const m = await cli('shard', ['merge', '--out', 's3://no-such-bucket/ds']);
  t.equal(m.code, 1);
  t.match(m.stderr, 'no-such-bucket');
});

t.test('plan to s3://, tasks that take everything from the plan, merge: the bytes of one local run', async (t) => {
  const out = 's3://bkt/planned';
  const plan = await cli('shard', ['plan', ...SYNTH, '--out', out]);
  t.equal(plan.code, 0, plan.stderr);
  t.match(JSON.parse(plan.stdout), { state: 'planned', items: 600, recordedItems: true });
  const before = s3.requests.length;
  for (const i of [1, 0]) {
    const r = await cli('shard', ['--out', out, '--task', `${i}/2`, '--workers', '1']);
    t.equal(r.code, 0, r.stderr);
    t.match(r.stderr, /\(from the plan\)/);
  }
  const planReads = s3.requests.slice(before).filter((q) => q.method === 'GET' && q.url.startsWith('/bkt/planned/.partial/plan'));
  t.ok(planReads.length > 0, 'the tasks read the plan from the bucket');
  t.ok(
    planReads.some((q) => q.range !== undefined),
    'a task reads its slice of the item file by range',
  );
  const merged = await cli('shard', ['merge', '--out', out]);
  t.equal(merged.code, 0, merged.stderr);
  t.same(await objectFiles(out), REF, 'plan + 2 tasks + merge to s3:// = one local run');
});
