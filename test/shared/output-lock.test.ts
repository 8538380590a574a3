import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { acquireOutputLock, lockFileFor, OutputLockedError, type LockHolder } from '../../src/shared/output-lock.ts';
import { tempDir } from '../helpers/tmp.ts';

/** A pid that certainly runs no process: a child that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

t.test('one writer: a second acquire is refused naming the holder; release frees it', async (t) => {
  const out = join(tempDir(t), 'run');
  const lock = acquireOutputLock(out, 'train --out run');
  t.equal(lock.file, `${out}.lock`);
  t.equal(lockFileFor(out), `${out}.lock`);
  const holder = JSON.parse(readFileSync(lock.file, 'utf8')) as LockHolder;
  t.same([holder.pid, holder.host, holder.command], [process.pid, hostname(), 'train --out run']);
  // The same process asking again is a second writer too (two runs in one process).
  t.throws(() => acquireOutputLock(out, 'again'), OutputLockedError);
  try {
    acquireOutputLock(out, 'again');
  } catch (e) {
    t.match((e as Error).message, new RegExp(`is being written by another process \\(pid ${process.pid} on ${hostname()}.*train --out run`));
  }
  lock.release();
  t.notOk(existsSync(lock.file), 'released: the lock file is gone');
  lock.release();
  const again = acquireOutputLock(out, 'next');
  t.ok(existsSync(again.file));
  again.release();
});

t.test('a stale lock of a dead process on this host is taken over, and said so', async (t) => {
  const out = join(tempDir(t), 'shards');
  const pid = deadPid();
  writeFileSync(lockFileFor(out), JSON.stringify({ pid, host: hostname(), command: 'shard (killed)', since: 'earlier' }));
  const stale: LockHolder[] = [];
  const lock = acquireOutputLock(out, 'shard again', (h) => stale.push(h));
  t.same(
    stale.map((h) => h.pid),
    [pid],
  );
  t.equal((JSON.parse(readFileSync(lock.file, 'utf8')) as LockHolder).pid, process.pid);
  lock.release();
});

t.test('a lock held on another host, or unreadable, is never taken over', async (t) => {
  const dir = tempDir(t);
  const other = join(dir, 'a');
  writeFileSync(lockFileFor(other), JSON.stringify({ pid: deadPid(), host: 'some-other-host', command: 'train', since: 'x' }));
  t.throws(() => acquireOutputLock(other, 'train'), { name: 'OutputLockedError', message: /pid \d+ on some-other-host/ });
  const junk = join(dir, 'b');
  writeFileSync(lockFileFor(junk), 'not json');
  t.throws(() => acquireOutputLock(junk, 'train'), { name: 'OutputLockedError', message: /could not be read; remove it if no other process writes/ });
});

t.test('a lock taken over by another process meanwhile is not removed by the old holder', async (t) => {
  const out = join(tempDir(t), 'x');
  const lock = acquireOutputLock(out, 'first');
  writeFileSync(lock.file, JSON.stringify({ pid: process.pid + 1, host: hostname(), command: 'other', since: 'now' }));
  lock.release();
  t.ok(existsSync(lock.file), 'left alone');
});
