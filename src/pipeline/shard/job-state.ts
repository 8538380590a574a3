// The on-disk state that makes a shard job resumable. A shard counts as done only when its
// record exists in <out>/.partial/, and that record is written after the shard's tar and idx
// were renamed into place; index files are written last, after every shard is done.
import { mkdir, readFile, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { atomicWriteFileAsync } from '../../shared/atomic-write.ts';
import { ShardJobError } from './errors.ts';

export const PARTIAL_DIR = '.partial';

export interface ShardRecord {
  url: string;
  nsamples: number;
  filesize: number;
  md5sum: string;
  errors: { file: string; reason: string }[];
  sum: number[];
  sumSq: number[];
  pixels: number;
  maxLabel: number;
}

/** The shard job's records and indexes: written whole or not at all (fsynced, renamed). */
export const writeAtomic = atomicWriteFileAsync;

export function shardName(split: string, index: number): string {
  return `${split}-${String(index).padStart(6, '0')}.tar`;
}

export function indexFileName(split: string, primary: string): string {
  return split === primary ? 'index.json' : `${split}.json`;
}

export async function readShardRecord(out: string, shard: string): Promise<ShardRecord | null> {
  const record = await readFile(join(out, PARTIAL_DIR, `${shard}.json`), 'utf8').catch(() => null);
  if (record === null) return null;
  const tar = await stat(join(out, shard)).catch(() => null);
  const parsed = JSON.parse(record) as ShardRecord;
  // A record whose tar is gone or changed size is not trusted: that shard is rewritten.
  return tar && tar.size === parsed.filesize ? parsed : null;
}

export async function writeShardRecord(out: string, shard: string, r: ShardRecord): Promise<void> {
  await writeAtomic(join(out, PARTIAL_DIR, `${shard}.json`), JSON.stringify(r));
}

/**
 * Make `out` ready for a job with this fingerprint. Returns 'complete' when the same job already
 * finished there, 'resume' or 'fresh' otherwise; refuses to mix with another job's files.
 */
export async function prepareOutDir(out: string, fingerprint: string, overwrite: boolean): Promise<'complete' | 'resume' | 'fresh'> {
  try {
    await mkdir(join(out, PARTIAL_DIR), { recursive: true });
  } catch (err) {
    throw new ShardJobError(`cannot create the output folder: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, out);
  }
  if (overwrite) await removeOurFiles(out);
  const jobFile = join(out, PARTIAL_DIR, 'job.json');
  const previous = await readFile(jobFile, 'utf8').catch(() => null);
  const index = await readFile(join(out, 'index.json'), 'utf8').catch(() => null);
  if (index !== null) {
    const done = (JSON.parse(index) as { job?: string }).job;
    if (done === fingerprint) {
      await rm(join(out, PARTIAL_DIR), { recursive: true, force: true });
      return 'complete';
    }
    throw new ShardJobError('already holds a different dataset (its index.json was made with other inputs or options); use another --out or --overwrite', out);
  }
  if (previous !== null && previous !== fingerprint) {
    throw new ShardJobError('holds an unfinished job with other inputs or options; use another --out or --overwrite', out);
  }
  const strays = (await readdir(out)).filter((f) => /\.tar$/.test(f));
  if (previous === null && strays.length > 0 && !overwrite) {
    throw new ShardJobError(`is not empty (${strays[0]} ...) and was not made by this job; use another --out or --overwrite`, out);
  }
  await removeTemporaries(out);
  await writeAtomic(jobFile, fingerprint);
  return previous === null ? 'fresh' : 'resume';
}

/**
 * Temporaries of an earlier run that was killed (a shard's `.tar.tmp`, an atomic write's
 * `.<name>.tmp-<pid>-<random>`): never complete, and no other process writes here (the command
 * holds the folder's lock), so they go.
 */
async function removeTemporaries(out: string): Promise<void> {
  const tmp = /^(?:[\w.-]+-\d{6}\.(?:tar|idx)\.tmp|\.[\w.-]+\.tmp-\d+-[a-z0-9]+)$/;
  for (const f of await readdir(out)) if (tmp.test(f)) await rm(join(out, f), { force: true });
  const partial = join(out, PARTIAL_DIR);
  for (const f of await readdir(partial).catch(() => [] as string[])) if (tmp.test(f)) await rm(join(partial, f), { force: true });
}

/** Only files this tool writes; anything else in the folder is left alone. */
async function removeOurFiles(out: string): Promise<void> {
  // Also the temporaries of an interrupted write (atomic-write's `.<name>.tmp-<pid>-<random>`).
  const ours = /^\.?(index\.json|val\.json|errors\.jsonl|[\w.-]+-\d{6}\.(tar|idx))(\.tmp(-\d+-[a-z0-9]+)?)?$/;
  for (const f of await readdir(out)) {
    if (ours.test(f)) await rm(join(out, f), { force: true });
  }
  await rm(join(out, PARTIAL_DIR), { recursive: true, force: true });
  await mkdir(join(out, PARTIAL_DIR), { recursive: true });
}

export async function removePartialDir(out: string): Promise<void> {
  await rm(join(out, PARTIAL_DIR), { recursive: true, force: true });
}
