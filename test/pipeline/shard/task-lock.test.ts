import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { acquireTaskLock, assertFolderNotLocked } from '../../../src/pipeline/shard/task-lock.ts';
import { OutputLockedError } from '../../../src/shared/output-lock.ts';
import { tempDir } from '../../helpers/tmp.ts';

const holder = (pid: number, host: string): string => `${JSON.stringify({ pid, host, command: 'shard --task 1/4', since: '2024-01-01T00:00:00Z' })}\n`;
const deadPid = (): number => spawnSync(process.execPath, ['-e', '0']).pid!;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

t.test('taken and released; a second taker in the same live process is refused', async (t) => {
  const file = join(tempDir(t), 'p', 'task-000001.lock');
  const lock = await acquireTaskLock(file, 'cmd', { what: 'out (task 1/4)' });
  t.equal(JSON.parse(readFileSync(file, 'utf8')).pid, process.pid);
  await t.rejects(acquireTaskLock(file, 'cmd', { what: 'out (task 1/4)' }), OutputLockedError);
  lock.release();
  t.notOk(existsSync(file));
});

t.test('on this host: a dead holder is taken over at once, a live one refuses at once', async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'task.lock');
  writeFileSync(file, holder(deadPid(), hostname()));
  const notes: string[] = [];
  const lock = await acquireTaskLock(file, 'cmd', { what: 'w', onTakeover: (_h, why) => notes.push(why) });
  t.match(notes, [/no longer runs/]);
  lock.release();
  const child = spawn('sleep', ['30']);
  t.teardown(() => child.kill('SIGKILL'));
  writeFileSync(file, holder(child.pid!, hostname()));
  const err = await acquireTaskLock(file, 'cmd', { what: 'out (task 1/4)', leaseMs: 50 }).catch((e: unknown) => e);
  t.type(err, OutputLockedError);
  t.match((err as Error).message, new RegExp(`out \\(task 1/4\\) is being written by another process \\(pid ${child.pid} on ${hostname()}`));
});

t.test("another machine's lock: waited on while refreshed, taken over once not refreshed for a lease", async (t) => {
  const dir = tempDir(t);
  const file = join(dir, 'task.lock');
  writeFileSync(file, holder(1, 'elsewhere'));
  const refresh = setInterval(() => {
    const now = new Date();
    utimesSync(file, now, now);
  }, 30);
  let waits = 0;
  const takeovers: string[] = [];
  // A lease about 30 refreshes long: only a stall of this process over a second (a loaded CI machine)
  // could let its own poll see the refreshed lock as expired.
  const acquiring = acquireTaskLock(file, 'cmd', { what: 'w', leaseMs: 1000, pollMs: 20, onWait: () => waits++, onTakeover: (_h, why) => takeovers.push(why) });
  const first = await Promise.race([acquiring.then(() => 'acquired'), sleep(2500).then(() => 'waiting')]);
  t.equal(first, 'waiting', 'a refreshed lock is not taken, however old its holder');
  t.equal(waits, 1, 'told once that it waits');
  clearInterval(refresh); // the holder's machine dies
  const started = performance.now();
  const lock = await acquiring;
  t.ok(performance.now() - started >= 950, 'taken only after a lease without refresh');
  t.match(takeovers, [/not refreshed for 1 s/]);
  t.equal(JSON.parse(readFileSync(file, 'utf8')).pid, process.pid);
  lock.release();
});

t.test('the holder refreshes its lock while it runs', async (t) => {
  const file = join(tempDir(t), 'task.lock');
  const lock = await acquireTaskLock(file, 'cmd', { what: 'w', leaseMs: 100 });
  const past = new Date(Date.now() - 3_600_000);
  utimesSync(file, past, past);
  await sleep(150);
  t.ok(statSync(file).mtimeMs > past.getTime() + 3_000_000, 'mtime moved forward');
  lock.release();
});

t.test("tasks do not run while a whole-job run, plan or merge holds the folder's lock", async (t) => {
  const dir = tempDir(t);
  const folder = join(dir, 'out');
  mkdirSync(folder);
  t.doesNotThrow(() => assertFolderNotLocked(folder));
  writeFileSync(`${folder}.lock`, holder(process.pid, hostname()));
  t.throws(() => assertFolderNotLocked(folder), OutputLockedError);
  writeFileSync(`${folder}.lock`, holder(1, 'elsewhere'));
  t.throws(() => assertFolderNotLocked(folder), OutputLockedError, "another machine's: cannot tell, so refused");
  writeFileSync(`${folder}.lock`, holder(deadPid(), hostname()));
  t.doesNotThrow(() => assertFolderNotLocked(folder), 'a dead process on this host does not count');
  rmSync(`${folder}.lock`);
});
