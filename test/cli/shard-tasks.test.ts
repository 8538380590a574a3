// The shard command split over machines: --task and the schedulers' environments, plan, merge,
// and a task killed with SIGKILL and run again, each compared byte for byte with one run.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { colourImage, writeFile } from '../helpers/fixtures.ts';
import { outputFiles } from '../helpers/output-files.ts';
import { tempDir } from '../helpers/tmp.ts';

const root = new URL('../../', import.meta.url).pathname;
const entry = join(root, 'src/cli/shard.ts');

/** The environment without any scheduler's variables (the tests set the ones they mean). */
function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const k of Object.keys(env)) if (k === 'JOB_COMPLETION_INDEX' || k === 'SMLP_SHARD_TASKS' || k.startsWith('SLURM_')) delete env[k];
  return { ...env, ...extra };
}

function shard(args: string[], env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', entry, ...args], { encoding: 'utf8', cwd: root, env: cleanEnv(env) });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const SYNTH = [
  'synthetic',
  '--count',
  '90',
  '--num-classes',
  '3',
  '--res',
  '8',
  '--samples-per-shard',
  '10',
  '--val-fraction',
  '0.2',
  '--workers',
  '1',
  '--quiet',
];

function reference(t: { teardown(fn: () => void): void }, args: string[]): Record<string, string> {
  const out = join(tempDir(t), 'one');
  const r = shard([...args, '--out', out]);
  if (r.code !== 0) throw new Error(r.stderr);
  return outputFiles(out);
}

t.test('--help describes plan, merge, --task and the schedulers it reads', async (t) => {
  const r = shard(['--help']);
  t.equal(r.code, 0);
  for (const w of [
    'plan <source>',
    'merge --out',
    '--task I/N',
    '--tasks N',
    'JOB_COMPLETION_INDEX',
    'SMLP_SHARD_TASKS',
    'SLURM_ARRAY_TASK_ID',
    'SLURM_ARRAY_TASK_MIN',
    '--task none',
  ]) {
    t.match(r.stdout, w);
  }
});

t.test('bad task ids are usage errors (exit 2) and write nothing', async (t) => {
  const dir = tempDir(t);
  const out = join(dir, 'o');
  for (const args of [
    ['--task', '3/3'],
    ['--task=-1/2'],
    ['--task', '-1/2'],
    ['--task', 'a/b'],
    ['--task', '0/0'],
    ['--task', '1/2', '--tasks', '3'],
    ['--tasks', '0'],
  ]) {
    const r = shard([...SYNTH, '--out', out, ...args]);
    t.equal(r.code, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, /--task|tasks/, args.join(' '));
  }
  const k8s = shard([...SYNTH, '--out', out], { JOB_COMPLETION_INDEX: '1' });
  t.equal(k8s.code, 2);
  t.match(k8s.stderr, /pass --tasks N \(the Job's completions\) or set SMLP_SHARD_TASKS/);
  const gap = shard([...SYNTH, '--out', out], { SLURM_ARRAY_TASK_ID: '7', SLURM_ARRAY_TASK_COUNT: '3' });
  t.equal(gap.code, 2);
  t.match(gap.stderr, /one range without gaps/);
  const overwrite = shard([...SYNTH, '--out', out, '--task', '0/2', '--overwrite']);
  t.equal(overwrite.code, 2);
  t.notOk(existsSync(out), 'nothing created');
});

t.test('Kubernetes Indexed Job and Slurm array environments: tasks plus merge give the files of one run', async (t) => {
  const ref = reference(t, SYNTH);
  const dir = tempDir(t);
  const k8s = join(dir, 'k8s');
  for (const index of ['1', '0']) {
    const r = shard([...SYNTH, '--out', k8s], { JOB_COMPLETION_INDEX: index, SMLP_SHARD_TASKS: '2' });
    t.equal(r.code, 0, r.stderr);
    t.match(JSON.parse(r.stdout).task, { index: Number(index), count: 2 });
  }
  t.notOk(existsSync(join(k8s, 'index.json')));
  t.equal(shard(['merge', '--out', k8s, '--quiet']).code, 0);
  t.same(outputFiles(k8s), ref);
  // --array=1-3 (ids 1..3 are tasks 0..2).
  const slurm = join(dir, 'slurm');
  for (const id of ['3', '1', '2']) {
    const r = shard([...SYNTH, '--out', slurm], { SLURM_ARRAY_TASK_ID: id, SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_COUNT: '3' });
    t.equal(r.code, 0, r.stderr);
    t.match(JSON.parse(r.stdout).task, { index: Number(id) - 1, count: 3 });
  }
  const merged = shard(['merge', '--out', slurm]);
  t.equal(merged.code, 0, merged.stderr);
  t.match(merged.stderr, /train: 72 samples in 8 shards/);
  t.same(outputFiles(slurm), ref);
  const whole = shard([...SYNTH, '--out', join(dir, 'whole'), '--task', 'none'], { SLURM_ARRAY_TASK_ID: '0', SLURM_ARRAY_TASK_COUNT: '3' });
  t.equal(whole.code, 0, whole.stderr);
  t.same(outputFiles(join(dir, 'whole')), ref, '--task none: a whole-job run inside an array');
});

t.test('a task killed with SIGKILL half-way is run again and completes its part', async (t) => {
  const args = ['synthetic', '--count', '3000', '--num-classes', '5', '--res', '16', '--samples-per-shard', '20', '--workers', '1', '--quiet'];
  const ref = reference(t, args);
  const out = join(tempDir(t), 'tasks');
  t.equal(shard([...args, '--out', out, '--task', '0/2']).code, 0);
  // Task 1 owns shards 75..149 (~10 ms each here): kill it once its first shard is complete. At
  // the lowest priority it cannot finish them all while a loaded machine keeps this test waiting.
  const child = spawn('nice', ['-n', '19', process.execPath, '--import', 'tsx', entry, ...args, '--out', out, '--task', '1/2'], {
    cwd: root,
    env: cleanEnv(),
    stdio: 'ignore',
  });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
  const first = join(out, '.partial', 'train-000075.tar.json');
  const started = Date.now();
  while (!existsSync(first) && Date.now() - started < 120_000) await new Promise((r) => setTimeout(r, 5));
  child.kill('SIGKILL');
  t.equal(await exited, 'SIGKILL', 'killed, not finished');
  const records = readdirSync(join(out, '.partial')).filter((f) => /^train-\d+\.tar\.json$/.test(f)).length;
  t.ok(records >= 76 && records < 150, `killed half-way (${records - 75} of task 1's 75 shards done)`);
  t.ok(existsSync(join(out, '.partial', 'task-000001.lock')), 'its lock is left behind');
  const rerun = shard([...args, '--out', out, '--task', '1/2']);
  t.equal(rerun.code, 0, rerun.stderr);
  t.ok(JSON.parse(rerun.stdout).task.resumed >= 1, 'resumed from its complete shards');
  t.match(rerun.stderr, /took over the lock of task 1\/2 left by pid \d+ on .*: its process \d+ no longer runs/);
  const merged = shard(['merge', '--out', out, '--quiet']);
  t.equal(merged.code, 0, merged.stderr);
  t.same(outputFiles(out), ref);
  const late = shard([...args, '--out', out, '--task', '0/2']);
  t.equal(late.code, 0, late.stderr);
  t.equal(JSON.parse(late.stdout).state, 'complete', 'a task run after the merge finds the dataset complete');
  t.same(outputFiles(out), ref, '... and leaves it as it was');
});

t.test('plan: tasks use the recorded listing, not the source; options are checked against it', async (t) => {
  const dir = tempDir(t);
  const src = join(dir, 'images');
  for (let i = 0; i < 24; i++)
    writeFile(join(src, `class${i % 3}`, `${i}.png`), await colourImage(6 + (i % 4), 6, [i * 10, 255 - i * 10, (i * 37) % 256], 'png'));
  const args = ['imagefolder', src, '--res', '8', '--samples-per-shard', '5', '--val-fraction', '0.25', '--workers', '1', '--quiet'];
  const ref = reference(t, args);
  const out = join(dir, 'planned');
  const plan = shard(['plan', ...args, '--out', out]);
  t.equal(plan.code, 0, plan.stderr);
  t.match(JSON.parse(plan.stdout), { state: 'planned', items: 24, recordedItems: true });
  // The source changes after the plan: a task that listed it would see 30 images.
  for (let i = 0; i < 6; i++) writeFile(join(src, 'class1', `late${i}.png`), await colourImage(6, 6, [1, 2, 3 + i], 'png'));
  const changed = shard([...args, '--out', join(dir, 'unplanned'), '--task', '0/2']);
  t.equal(changed.code, 0);
  t.match(JSON.parse(changed.stdout).task, { of: 7 }, 'without the plan a task lists 30 images: 7 shards');
  const mismatch = shard([...args, '--res', '16', '--out', out, '--task', '0/2']);
  t.equal(mismatch.code, 2);
  t.match(mismatch.stderr, /differ from the plan.*\n {2}job\.res: plan 8, this command 16/);
  const partial = shard(['--res', '8', '--out', out, '--task', '0/2']);
  t.equal(partial.code, 2, 'options without the source');
  t.match(partial.stderr, /the whole command .* or none of it/);
  t.equal(shard(['plan', ...args, '--out', out, '--task', '0/2']).code, 2, 'plan takes no --task');
  const t1 = shard(['--out', out, '--task', '1/2', '--workers', '1']);
  t.equal(t1.code, 0, t1.stderr);
  t.match(t1.stderr, /\(from the plan\)/);
  t.match(JSON.parse(t1.stdout).task, { of: 6 }, 'the plan has 24 images: 6 shards');
  const t0 = shard([...args, '--out', out, '--task', '0/2']);
  t.equal(t0.code, 0, `the same command as the plan's is accepted: ${t0.stderr}`);
  t.equal(shard(['merge', '--out', out, '--quiet']).code, 0);
  t.same(outputFiles(out), ref, 'the files of one run made before the source changed');
});

t.test('merge: missing shards exit 1 naming them and their tasks; usage errors exit 2', async (t) => {
  const dir = tempDir(t);
  const out = join(dir, 'o');
  t.equal(shard([...SYNTH, '--out', out, '--task', '1/3']).code, 0);
  const r = shard(['merge', '--out', out]);
  t.equal(r.code, 1);
  t.match(
    r.stderr,
    /IncompleteJobError: .*: 7 of 10 shards are not complete: train-000000\.tar \(task 0\), .*val-000001\.tar \(task 2\); run again tasks 0, 2 of 3/,
  );
  t.notOk(existsSync(join(out, 'index.json')));
  t.equal(shard(['merge']).code, 2, 'no --out');
  t.equal(shard(['merge', '--out', out, '--res', '8']).code, 2, 'options of a job');
  t.equal(shard(['merge', 'synthetic', '--out', out]).code, 2, 'a source');
  const none = shard(['merge', '--out', join(dir, 'nothing')]);
  t.equal(none.code, 1);
  t.match(none.stderr, /holds no shard job/);
});

t.test('a webdataset source given as shard URLs cannot be split into tasks (exit 2)', async (t) => {
  const dir = tempDir(t);
  const data = join(dir, 'data');
  t.equal(shard([...SYNTH, '--out', data]).code, 0);
  const r = shard(['webdataset', join(data, 'train-{000000..000007}.tar'), '--out', join(dir, 'o'), '--task', '0/2', '--quiet']);
  t.equal(r.code, 2);
  t.match(r.stderr, /index \.json/);
});
