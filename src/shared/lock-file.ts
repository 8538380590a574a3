// The pieces every lock of this project is made of (the output-folder lock, shard task locks,
// the shard cache's locks and staging folders): an exclusive create, and whether a process of
// this host still runs. Each lock keeps its own holder format and staleness rules.
import { closeSync, openSync, writeSync } from 'node:fs';

/** Whether `pid` runs on this host (EPERM: it runs, as another user). */
export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Creates `file` holding `content` unless it exists (O_EXCL: of two processes exactly one
 * wins). False when it exists; any other failure (no such folder, read-only) is thrown.
 */
export function createExclusive(file: string, content: string): boolean {
  let fd: number;
  try {
    fd = openSync(file, 'wx');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  }
  try {
    writeSync(fd, content);
  } finally {
    closeSync(fd);
  }
  return true;
}
