// One writer per output folder. A command that writes a folder (shard, train, finetune, import)
// holds `<folder>.lock` beside it while it runs: created exclusively (O_EXCL), holding the pid,
// host and command. A second writer is refused; a lock left by a process that no longer runs on
// this host (killed, crashed) is taken over, and said so. The file sits beside the folder, not
// in it, so that the folder's own contents (an import's atomic rename of a whole directory, the
// shard job's "only our files" rules) are untouched by it.
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { createExclusive, isProcessAlive } from './lock-file.ts';

export interface LockHolder {
  pid: number;
  host: string;
  command: string;
  since: string;
}

export class OutputLockedError extends Error {
  override readonly name = 'OutputLockedError';
  constructor(
    readonly folder: string,
    readonly lockFile: string,
    readonly holder: LockHolder | null,
  ) {
    super(
      holder
        ? `${folder} is being written by another process (pid ${holder.pid} on ${holder.host}, since ${holder.since}: ${holder.command}); wait for it, or use another output folder (lock: ${lockFile})`
        : `${folder} is locked by ${lockFile}, which could not be read; remove it if no other process writes ${folder}`,
    );
  }
}

/** The output folder cannot be written at all (its parent missing and not creatable, read-only). */
export class OutputFolderError extends Error {
  override readonly name = 'OutputFolderError';
  constructor(
    readonly folder: string,
    reason: string,
  ) {
    super(`${folder}: ${reason}`);
  }
}

export interface OutputLock {
  readonly file: string;
  release(): void;
}

export function lockFileFor(folder: string): string {
  const abs = resolve(folder);
  return join(dirname(abs), `${basename(abs)}.lock`);
}

/** A lock file's holder; null where the text is not one (torn, foreign, unreadable). */
export function parseLockHolder(raw: string | null): LockHolder | null {
  if (raw === null) return null;
  try {
    const h = JSON.parse(raw) as Partial<LockHolder>;
    if (typeof h.pid !== 'number' || typeof h.host !== 'string') return null;
    return { pid: h.pid, host: h.host, command: String(h.command ?? ''), since: String(h.since ?? '') };
  } catch {
    return null;
  }
}

function readHolder(file: string): LockHolder | null {
  let raw: string | null = null;
  try {
    raw = readFileSync(file, 'utf8');
  } catch {
    return null;
  }
  return parseLockHolder(raw);
}

function tryCreate(file: string, holder: LockHolder): boolean {
  return createExclusive(file, `${JSON.stringify(holder)}\n`);
}

/**
 * Takes the lock of `folder` for this process, or throws OutputLockedError. `onTakeover` hears of
 * a stale lock (its process gone) that was replaced. The lock is released by `release()` and,
 * failing that, when the process exits normally.
 */
export function acquireOutputLock(folder: string, command: string, onTakeover?: (stale: LockHolder) => void): OutputLock {
  const file = lockFileFor(folder);
  try {
    mkdirSync(dirname(file), { recursive: true });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new OutputFolderError(folder, `cannot create the output folder's parent (${err.code ?? err.message})`);
  }
  const me: LockHolder = { pid: process.pid, host: hostname(), command, since: new Date().toISOString() };
  let created: boolean;
  try {
    created = tryCreate(file, me);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new OutputFolderError(
      folder,
      `cannot create the output folder's lock file ${file} (${err.code ?? err.message}${err.code === 'EACCES' || err.code === 'EROFS' ? ': not writable' : ''})`,
    );
  }
  if (!created) {
    const holder = readHolder(file);
    const stale = holder !== null && holder.host === me.host && holder.pid !== me.pid && !isProcessAlive(holder.pid);
    if (!stale) throw new OutputLockedError(folder, file, holder);
    // Two processes taking over the same stale lock: only one of them wins the exclusive create.
    rmSync(file, { force: true });
    if (!tryCreate(file, me)) throw new OutputLockedError(folder, file, readHolder(file));
    onTakeover?.(holder);
  }
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    process.off('exit', release);
    // Only our own lock: never remove one another process took over meanwhile.
    if (readHolder(file)?.pid === me.pid) rmSync(file, { force: true });
  };
  process.on('exit', release);
  return { file, release };
}
