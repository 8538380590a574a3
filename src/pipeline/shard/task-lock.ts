// One process per task of a shard job, on any machine sharing the output folder. The lock is a
// file created exclusively (O_EXCL), holding pid, host and command, like the folder lock of
// src/shared/output-lock.ts; unlike it, its holder may run on another machine, where whether it
// still runs cannot be asked. So the holder refreshes the file's mtime every lease/4, and a lock
// whose mtime did not change for a whole lease, as observed by the waiting process's own clock
// (no comparison of two machines' clocks), is taken over: a task killed with its machine is
// rerun elsewhere after one lease. On the holder's own host a dead pid is taken over at once and
// a live one refuses at once.
import { mkdirSync, readFileSync, rmSync, statSync, utimesSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname } from 'node:path';
import { createExclusive, isProcessAlive } from '../../shared/lock-file.ts';
import { lockFileFor, OutputLockedError, parseLockHolder, type LockHolder } from '../../shared/output-lock.ts';

export interface TaskLock {
  readonly file: string;
  /** A lock on object storage is removed with a request: await it before the process exits. */
  release(): void | Promise<void>;
}

export interface TaskLockOptions {
  /** A lock not refreshed for this long is stale (default 60 s). */
  leaseMs?: number;
  /** How often a waiting task looks again (default 1 s, at most the lease / 4). */
  pollMs?: number;
  /** Told once when waiting on another machine's lock begins. */
  onWait?: (holder: LockHolder | null) => void;
  onTakeover?: (stale: LockHolder | null, why: string) => void;
  /** What the lock guards, for messages ("shards/in21k task 3/8"). */
  what: string;
}

export const DEFAULT_TASK_LEASE_MS = 60_000;

function readRaw(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return null;
  }
}

function tryCreate(file: string, holder: LockHolder): boolean {
  return createExclusive(file, `${JSON.stringify(holder)}\n`);
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function acquireTaskLock(file: string, command: string, o: TaskLockOptions): Promise<TaskLock> {
  const lease = o.leaseMs ?? DEFAULT_TASK_LEASE_MS;
  const poll = Math.max(1, Math.min(o.pollMs ?? 1000, lease / 4));
  mkdirSync(dirname(file), { recursive: true });
  const me: LockHolder = { pid: process.pid, host: hostname(), command, since: new Date().toISOString() };
  let observed: { raw: string | null; mtimeMs: number; at: number } | null = null;
  let told = false;
  for (;;) {
    if (tryCreate(file, me)) break;
    const raw = readRaw(file);
    let mtimeMs: number;
    try {
      mtimeMs = statSync(file).mtimeMs;
    } catch {
      continue; // released meanwhile: try again at once
    }
    const holder = parseLockHolder(raw);
    let stale: string | null = null;
    if (holder && holder.host === me.host) {
      if (holder.pid !== me.pid && !isProcessAlive(holder.pid)) stale = `its process ${holder.pid} no longer runs`;
      else throw new OutputLockedError(o.what, file, holder);
    } else {
      const now = performance.now();
      if (!observed || observed.mtimeMs !== mtimeMs || observed.raw !== raw) observed = { raw, mtimeMs, at: now };
      else if (now - observed.at >= lease) stale = `not refreshed for ${lease >= 1000 ? `${Math.round(lease / 1000)} s` : `${lease} ms`}`;
      if (!stale && !told) {
        told = true;
        o.onWait?.(holder);
      }
    }
    if (stale) {
      // Remove only the lock we judged stale, not one another waiter has just taken over.
      if (readRaw(file) === raw) {
        rmSync(file, { force: true });
        o.onTakeover?.(holder, stale);
      }
      observed = null;
      continue;
    }
    await sleep(poll);
  }
  const beat = setInterval(
    () => {
      try {
        const now = new Date();
        utimesSync(file, now, now);
      } catch {
        // A vanished lock (the folder removed) is not this task's problem to report.
      }
    },
    Math.max(1, lease / 4),
  );
  beat.unref();
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    clearInterval(beat);
    process.off('exit', release);
    const h = parseLockHolder(readRaw(file));
    if (h?.pid === me.pid && h.host === me.host) rmSync(file, { force: true });
  };
  process.on('exit', release);
  return { file, release };
}

/**
 * Tasks write a shared folder without its folder lock (`<folder>.lock`, held by a whole-job run,
 * a plan or a merge), but not while one of those runs: they would remove each other's files.
 * A lock of a dead process on this host does not count.
 */
export function assertFolderNotLocked(folder: string): void {
  const file = lockFileFor(folder);
  const raw = readRaw(file);
  if (raw === null) return;
  const holder = parseLockHolder(raw);
  if (holder && holder.host === hostname() && !isProcessAlive(holder.pid)) return;
  throw new OutputLockedError(folder, file, holder);
}
