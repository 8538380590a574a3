// The shard cache folder shared by every process on a host: who may write, who still reads, and
// what may go when the folder is over its size limit.
//
//   <dir>/<name>                         complete shards; mtime = last use (the LRU order)
//   <dir>/.<name>.tmp-<pid>-<random>     a download in progress (renamed to <name> when checked)
//   <dir>/.locks/<name>                  "pid <pid> downloads <name>": others wait for it
//   <dir>/.inuse/<name>.<pid>            "pid <pid> reads <name>": eviction leaves it alone
//   <dir>/.cache.lock                    held for milliseconds around every lookup, mark and eviction
//
// A lookup (exists? then mark in use), a rename into place (then mark) and an eviction pass each
// run under .cache.lock, so an evicting process never removes a shard between another's check and
// its mark. Downloads run outside it, serialised per shard by .locks/<name>. Locks and marks name
// their pid and host: those of a dead process on this host are stale and removed; a lock whose
// heartbeat (its mtime, refreshed while held) stopped long ago is stale whatever its host says.
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { createExclusive, isProcessAlive } from '../../shared/lock-file.ts';
import { PathError } from '../errors.ts';

export class ShardCacheError extends PathError {}

const HOST = hostname();
const LOCKS = '.locks';
const INUSE = '.inuse';
const CACHE_LOCK = '.cache.lock';
/** .cache.lock is held for a directory scan at most: older means its holder hung or died. */
const CACHE_LOCK_STALE_MS = 30_000;
/** A download lock's heartbeat interval, and the silence after which it is taken as dead. */
export const DOWNLOAD_HEARTBEAT_MS = 5_000;
export const DOWNLOAD_LOCK_STALE_MS = 60_000;

interface LockHolder {
  pid: number;
  host: string;
  token: string;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function readHolder(file: string): LockHolder | null {
  try {
    const h = JSON.parse(readFileSync(file, 'utf8')) as Partial<LockHolder>;
    return typeof h.pid === 'number' && typeof h.host === 'string' && typeof h.token === 'string' ? (h as LockHolder) : null;
  } catch {
    return null;
  }
}

const tryCreate = createExclusive;

function ageMs(file: string): number | null {
  try {
    return Date.now() - statSync(file).mtimeMs;
  } catch {
    return null;
  }
}

/**
 * Removes `file` if its holder is gone (dead pid on this host, or silent for `staleMs`). Two
 * processes breaking the same lock are serialised by `<file>.break`, and the lock is removed only
 * if it still holds what was judged stale, so a fresh lock taken meanwhile is never removed.
 */
function breakIfStale(file: string, staleMs: number): void {
  const age = ageMs(file);
  if (age === null) return;
  const holder = readHolder(file);
  const dead = holder !== null && holder.host === HOST && holder.pid !== process.pid && !isProcessAlive(holder.pid);
  // An unreadable lock is one being written (create, then write): fresh unless old.
  if (!dead && age < staleMs) return;
  const brk = `${file}.break`;
  if (!tryCreate(brk, `${process.pid}\n`)) {
    const bAge = ageMs(brk);
    if (bAge !== null && bAge > 10_000) rmSync(brk, { force: true });
    return;
  }
  try {
    const now = readHolder(file);
    if (now?.token === holder?.token) rmSync(file, { force: true });
  } finally {
    rmSync(brk, { force: true });
  }
}

export class HeldLock {
  private timer: NodeJS.Timeout | null = null;
  constructor(
    readonly file: string,
    private readonly token: string,
  ) {}

  /** Refreshes the lock's mtime now and then, so waiters can tell a live holder from a hung one. */
  heartbeat(everyMs: number): void {
    this.timer = setInterval(() => {
      try {
        const now = new Date();
        utimesSync(this.file, now, now);
      } catch {
        // Gone (broken as stale after a long stall): release() copes.
      }
    }, everyMs);
    this.timer.unref();
  }

  release(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    // Only our own: never remove a lock another process took over after judging ours stale.
    if (readHolder(this.file)?.token === this.token) rmSync(this.file, { force: true });
  }
}

/** One attempt at `file`; null when another live process holds it. */
function tryLock(file: string, staleMs: number): HeldLock | null {
  const token = randomBytes(8).toString('hex');
  const content = `${JSON.stringify({ pid: process.pid, host: HOST, token })}\n`;
  if (tryCreate(file, content)) return new HeldLock(file, token);
  breakIfStale(file, staleMs);
  return tryCreate(file, content) ? new HeldLock(file, token) : null;
}

export interface ShardEntry {
  name: string;
  size: number;
  mtimeMs: number;
}

export interface EvictResult {
  evicted: ShardEntry[];
  /** Bytes the folder holds afterwards (complete shards + live downloads). */
  total: number;
  /** Still over the limit: everything left is in use or being downloaded. */
  over: boolean;
}

/** The cache folder. All methods are safe against other processes using the same folder. */
export class CacheDir {
  private static readonly byPath = new Map<string, CacheDir>();
  /** The one object of this process for the folder `dir` (absolute), so its uses are counted once. */
  static at(dir: string): CacheDir {
    let d = CacheDir.byPath.get(dir);
    if (!d) {
      d = new CacheDir(dir);
      CacheDir.byPath.set(dir, d);
    }
    return d;
  }

  /** This process's reads, per shard name (one mark file per name, however many users here). */
  private readonly uses = new Map<string, number>();
  private exitHook: (() => void) | null = null;

  private constructor(readonly dir: string) {}

  ensure(): void {
    try {
      mkdirSync(join(this.dir, LOCKS), { recursive: true });
      mkdirSync(join(this.dir, INUSE), { recursive: true });
    } catch (e) {
      throw new ShardCacheError(`cannot create the shard cache folder (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, this.dir);
    }
  }

  pathOf(name: string): string {
    return join(this.dir, name);
  }

  /** Runs `fn` holding .cache.lock (keep it short: every cache user waits on it). */
  async exclusive<T>(fn: () => T | Promise<T>): Promise<T> {
    const file = join(this.dir, CACHE_LOCK);
    let lock: HeldLock | null = null;
    for (let attempt = 0; lock === null; attempt++) {
      lock = tryLock(file, CACHE_LOCK_STALE_MS);
      if (lock === null) await sleep(Math.min(1 + attempt, 25));
    }
    try {
      return await fn();
    } finally {
      lock.release();
    }
  }

  /** The download lock of `name`, or null while another live process downloads it. */
  tryDownloadLock(name: string): HeldLock | null {
    const lock = tryLock(join(this.dir, LOCKS, name), DOWNLOAD_LOCK_STALE_MS);
    lock?.heartbeat(DOWNLOAD_HEARTBEAT_MS);
    return lock;
  }

  /** Call under exclusive(): the shard is complete and now marked as read by this process. */
  markInUse(name: string): void {
    const n = this.uses.get(name) ?? 0;
    if (n === 0) {
      const mark = join(this.dir, INUSE, `${name}.${process.pid}`);
      try {
        // Overwrite: a mark left by a dead process that had our pid is ours now.
        writeText(mark, `${HOST}\n`);
      } catch (e) {
        throw new ShardCacheError(`cannot mark a shard in use (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, mark);
      }
      if (!this.exitHook) {
        // Marks of a process that exits without closing its loader: removed on the way out.
        this.exitHook = () => {
          for (const nm of this.uses.keys()) rmSync(join(this.dir, INUSE, `${nm}.${process.pid}`), { force: true });
        };
        process.on('exit', this.exitHook);
      }
    }
    this.uses.set(name, n + 1);
  }

  /** One use of `name` by this process is over; the mark goes with the last one. */
  release(name: string): void {
    const n = this.uses.get(name) ?? 0;
    if (n <= 1) {
      this.uses.delete(name);
      if (n === 1) rmSync(join(this.dir, INUSE, `${name}.${process.pid}`), { force: true });
    } else this.uses.set(name, n - 1);
    if (this.uses.size === 0 && this.exitHook) {
      process.off('exit', this.exitHook);
      this.exitHook = null;
    }
  }

  /** Marks the shard as just used: the LRU order is the shards' mtimes. */
  touch(name: string): void {
    const now = new Date();
    utimesSync(this.pathOf(name), now, now);
  }

  /** Names read by some live process (marks of dead processes on this host are removed). */
  inUse(): Set<string> {
    const out = new Set<string>();
    let marks: string[];
    try {
      marks = readdirSync(join(this.dir, INUSE));
    } catch {
      return out;
    }
    for (const m of marks) {
      const dot = m.lastIndexOf('.');
      const pid = Number(m.slice(dot + 1));
      if (dot <= 0 || !Number.isSafeInteger(pid)) continue;
      const file = join(this.dir, INUSE, m);
      let host: string;
      try {
        host = readFileSync(file, 'utf8').trim();
      } catch {
        continue;
      }
      // An empty mark is one being written: live.
      if (host === HOST && pid !== process.pid && !isProcessAlive(pid)) {
        rmSync(file, { force: true });
        continue;
      }
      out.add(m.slice(0, dot));
    }
    return out;
  }

  /** Complete shards, and the bytes of downloads under way (those of dead processes are removed). */
  scan(): { shards: ShardEntry[]; downloading: number } {
    const shards: ShardEntry[] = [];
    let downloading = 0;
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return { shards, downloading };
    }
    for (const name of names) {
      if (name === LOCKS || name === INUSE || name.startsWith(CACHE_LOCK)) continue;
      let st;
      try {
        st = statSync(join(this.dir, name));
      } catch {
        continue;
      }
      if (!st.isFile()) continue;
      const tmp = /^\.(.+)\.tmp-(\d+)-[a-z0-9]+$/.exec(name) ?? /^(.+)\.(\d+)\.tmp$/.exec(name);
      if (tmp) {
        if (this.isOrphan(tmp[1]!, Number(tmp[2]), st.mtimeMs)) rmSync(join(this.dir, name), { force: true });
        else downloading += st.size;
        continue;
      }
      if (name.startsWith('.')) continue;
      shards.push({ name, size: st.size, mtimeMs: st.mtimeMs });
    }
    return { shards, downloading };
  }

  /**
   * A temporary download nobody writes any more: its shard's download lock is gone or silent
   * (the downloader renames before it lets go), and its pid is dead here or it too is silent.
   */
  private isOrphan(name: string, pid: number, mtimeMs: number): boolean {
    const lockAge = ageMs(join(this.dir, LOCKS, name));
    if (lockAge !== null && lockAge < DOWNLOAD_LOCK_STALE_MS) return false;
    return !isProcessAlive(pid) || Date.now() - mtimeMs > DOWNLOAD_LOCK_STALE_MS;
  }

  /**
   * Call under exclusive(): removes least recently used shards that no live process reads until
   * `incoming` more bytes fit under `maxBytes`, or nothing else can go.
   */
  evict(maxBytes: number, incoming: number, keep: ReadonlySet<string> = new Set()): EvictResult {
    const { shards, downloading } = this.scan();
    let total = downloading + shards.reduce((s, e) => s + e.size, 0);
    const evicted: ShardEntry[] = [];
    if (total + incoming <= maxBytes) return { evicted, total, over: false };
    const busy = this.inUse();
    const candidates = shards
      .filter((s) => !busy.has(s.name) && !keep.has(s.name) && !this.uses.has(s.name))
      .sort((a, b) => a.mtimeMs - b.mtimeMs || (a.name < b.name ? -1 : 1));
    for (const c of candidates) {
      if (total + incoming <= maxBytes) break;
      rmSync(this.pathOf(c.name), { force: true });
      total -= c.size;
      evicted.push(c);
    }
    return { evicted, total, over: total + incoming > maxBytes };
  }
}

function writeText(file: string, text: string): void {
  const fd = openSync(file, 'w');
  try {
    writeSync(fd, text);
  } finally {
    closeSync(fd);
  }
}
