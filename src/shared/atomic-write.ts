// Crash-safe writes: a file appears under its final name complete or not at all. Write to a
// temporary name in the same directory (same filesystem, so rename is atomic), fsync, rename,
// then fsync the directory so the rename itself survives a power cut. The one helper every
// layer uses (model files, checkpoints, shard records, indexes, plots), sync and async.
import { closeSync, fsyncSync, openSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { link, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

/**
 * A unique temporary name beside `path`: two writers of the same file never share one, and a
 * leftover from a crash is recognisable (`.<name>.tmp-<pid>-<random>`).
 */
export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`);
}

function fsyncPath(path: string): void {
  const fd = openSync(path, 'r');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function fsyncDir(dir: string): void {
  try {
    fsyncPath(dir);
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic there.
  }
}

/** Runs `write(tmp)` to produce the file, then moves it to `path` atomically. */
export function atomicWrite(path: string, write: (tmp: string) => void): void {
  const tmp = tempPathFor(path);
  try {
    write(tmp);
    fsyncPath(tmp);
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(dirname(path));
}

export function atomicWriteFile(path: string, data: string | Uint8Array): void {
  atomicWrite(path, (tmp) => writeFileSync(tmp, data));
}

async function writeSynced(tmp: string, data: string | Uint8Array): Promise<void> {
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** atomicWriteFile without blocking the event loop (the shard job writes records while workers run). */
export async function atomicWriteFileAsync(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = tempPathFor(path);
  try {
    await writeSynced(tmp, data);
    await rename(tmp, path);
  } catch (e) {
    await rm(tmp, { force: true });
    throw e;
  }
  fsyncDir(dirname(path));
}

/**
 * Creates `path` holding `data` unless it exists: written whole under a private name, then
 * hard-linked to the final name. link fails when the name exists, so of several writers exactly
 * one creates it, and nobody ever sees it half-written. False when it already existed.
 */
export async function atomicCreateFileAsync(path: string, data: string | Uint8Array): Promise<boolean> {
  const tmp = tempPathFor(path);
  try {
    await writeSynced(tmp, data);
    try {
      await link(tmp, path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    }
    fsyncDir(dirname(path));
    return true;
  } finally {
    await rm(tmp, { force: true });
  }
}
