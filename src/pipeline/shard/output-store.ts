// Where a shard job keeps its output and its state: the shards, their records, the job file, the
// plan, the indexes. The job logic (shard-job.ts, plan.ts, merge.ts) reaches them only through
// OutputStore, so another kind of output (object storage) is one more implementation of this
// interface. LocalOutputStore is a folder: state in <out>/.partial/, every file written whole
// or not at all (temporary name, fsync, rename).
import { mkdir, open, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { atomicCreateFileAsync } from '../../shared/atomic-write.ts';
import { writeWidsIndex, type WidsIndex } from '../webdataset/wids-index.ts';
import { ShardJobError } from './errors.ts';
import { PARTIAL_DIR, prepareOutDir, readShardRecord, removePartialDir, writeAtomic, writeShardRecord, type ShardRecord } from './job-state.ts';
import { acquireTaskLock, assertFolderNotLocked, type TaskLock, type TaskLockOptions } from './task-lock.ts';
import type { ShardTaskId } from './task-id.ts';

export type OutState = 'complete' | 'resume' | 'fresh';

/** State files every job kind shares (all in the job state, removed once the output is complete). */
export const JOB_FILE = 'job.json';
export const LAYOUT_FILE = 'layout.json';
export const TASKS_FILE = 'tasks.json';

export interface OutputStore {
  /** The folder or URL, for messages and summaries. */
  readonly location: string;
  /** The local file a shard's tar is written to (TarWriter writes `<path>.tmp`, renames on close). */
  shardPath(shard: string): string;
  /**
   * Called once a shard's tar is complete at shardPath, before its idx and record: a store whose
   * output is elsewhere uploads it here (a folder has nothing to do).
   */
  publishShard(shard: string, info: { size: number; md5sum: string }): Promise<void>;
  /** A whole-job run: ready for `fingerprint`, every temporary of a killed run removed. */
  prepare(fingerprint: string, overwrite: boolean): Promise<OutState>;
  /** A completed shard's record; null when the shard is not complete (no record, or its tar changed). */
  readRecord(shard: string): Promise<ShardRecord | null>;
  /** Written after the shard's tar and idx are in place: the record is what makes a shard count as done. */
  writeRecord(shard: string, record: ShardRecord): Promise<void>;
  /** A file of the job state (job.json, layout.json, plan.json ...), or null. */
  readState(name: string): Promise<string | null>;
  /** `length` bytes at `offset` of a state file (a task's slice of the plan's item file). */
  readStateBytes(name: string, offset: number, length: number): Promise<Uint8Array>;
  writeState(name: string, data: string | Uint8Array): Promise<void>;
  /**
   * Creates a state file unless it exists, atomically (never two writers both "first"): null when
   * created, else the content already there, for the caller to compare.
   */
  claimState(name: string, data: string): Promise<string | null>;
  /** A top-level output file (index.json ...), or null. */
  readFile(name: string): Promise<string | null>;
  /** Names of the output's top-level shard tars (complete or not; temporaries excluded). */
  listShardFiles(): Promise<string[]>;
  /** A shard's .idx, errors.jsonl: written whole or not at all. */
  writeFile(name: string, data: string | Uint8Array): Promise<void>;
  writeIndex(name: string, index: WidsIndex): Promise<void>;
  /**
   * Temporaries of killed writers. With `own`, only those of these shards (a task sharing the
   * output with running tasks must not touch theirs); without, all of them.
   */
  removeTemporaries(own?: ReadonlySet<string>): Promise<void>;
  /** Exclusive right to write task `task`'s shards, on whatever machine. */
  lockTask(task: ShardTaskId, command: string, o?: Omit<TaskLockOptions, 'what'>): Promise<TaskLock>;
  /** Removes the job state: the output is complete and equals a one-process run's. */
  finish(): Promise<void>;
}

/** A temporary's shard, for `<shard>.tar.tmp`, `.<shard>.tar.json.tmp-..`, `.<split>-NNNNNN.idx.tmp-..`. */
function temporaryOf(file: string): { shard: string | null } | null {
  let m = /^([\w.-]+-\d{6})\.(?:tar|idx)\.tmp$/.exec(file);
  if (m) return { shard: `${m[1]}.tar` };
  m = /^\.([\w.-]+)\.tmp-\d+-[a-z0-9]+$/.exec(file);
  if (!m) return null;
  const shard = /^([\w.-]+-\d{6})\.(?:tar\.json|idx)$/.exec(m[1]!);
  return { shard: shard ? `${shard[1]}.tar` : null };
}

export class LocalOutputStore implements OutputStore {
  readonly location: string;
  private readonly partial: string;

  constructor(readonly dir: string) {
    this.location = dir;
    this.partial = join(dir, PARTIAL_DIR);
  }

  shardPath(shard: string): string {
    return join(this.dir, shard);
  }

  publishShard(): Promise<void> {
    return Promise.resolve();
  }

  prepare(fingerprint: string, overwrite: boolean): Promise<OutState> {
    return prepareOutDir(this.dir, fingerprint, overwrite);
  }

  readRecord(shard: string): Promise<ShardRecord | null> {
    return readShardRecord(this.dir, shard);
  }

  writeRecord(shard: string, record: ShardRecord): Promise<void> {
    return writeShardRecord(this.dir, shard, record);
  }

  readState(name: string): Promise<string | null> {
    return readFile(join(this.partial, name), 'utf8').catch(() => null);
  }

  async readStateBytes(name: string, offset: number, length: number): Promise<Uint8Array> {
    const path = join(this.partial, name);
    const fh = await open(path, 'r').catch((e: NodeJS.ErrnoException) => {
      throw new ShardJobError(`cannot read the job state (${e.code ?? e.message})`, path);
    });
    try {
      const out = new Uint8Array(length);
      let at = 0;
      while (at < length) {
        const { bytesRead } = await fh.read(out, at, length - at, offset + at);
        if (bytesRead === 0) throw new ShardJobError(`truncated: wanted ${length} bytes at ${offset}, the file ends at ${offset + at}`, path);
        at += bytesRead;
      }
      return out;
    } finally {
      await fh.close();
    }
  }

  async writeState(name: string, data: string | Uint8Array): Promise<void> {
    await this.mkdirs();
    await writeAtomic(join(this.partial, name), data);
  }

  async claimState(name: string, data: string): Promise<string | null> {
    await this.mkdirs();
    const path = join(this.partial, name);
    // Exactly one of several tasks creates it; the others compare with what it wrote.
    if (await atomicCreateFileAsync(path, data)) return null;
    return await readFile(path, 'utf8');
  }

  readFile(name: string): Promise<string | null> {
    return readFile(join(this.dir, name), 'utf8').catch(() => null);
  }

  async listShardFiles(): Promise<string[]> {
    return (await readdir(this.dir).catch(() => [] as string[])).filter((f) => f.endsWith('.tar'));
  }

  writeFile(name: string, data: string | Uint8Array): Promise<void> {
    return writeAtomic(join(this.dir, name), data);
  }

  writeIndex(name: string, index: WidsIndex): Promise<void> {
    return writeWidsIndex(join(this.dir, name), index);
  }

  async removeTemporaries(own?: ReadonlySet<string>): Promise<void> {
    for (const dir of [this.dir, this.partial]) {
      for (const f of await readdir(dir).catch(() => [] as string[])) {
        const t = temporaryOf(f);
        if (!t) continue;
        if (own && (t.shard === null || !own.has(t.shard))) continue;
        await rm(join(dir, f), { force: true });
      }
    }
  }

  async lockTask(task: ShardTaskId, command: string, o: Omit<TaskLockOptions, 'what'> = {}): Promise<TaskLock> {
    assertFolderNotLocked(this.dir);
    // A merged output has no job state left to guard (the task will find it complete): a lock
    // would only leave an empty .partial/ behind in a finished dataset.
    if ((await this.readFile('index.json')) !== null) return { file: '', release: () => undefined };
    try {
      await this.mkdirs();
    } catch (err) {
      throw new ShardJobError(`cannot create the output folder: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, this.dir);
    }
    return acquireTaskLock(join(this.partial, `task-${String(task.index).padStart(6, '0')}.lock`), command, {
      ...o,
      what: `${this.dir} (task ${task.index}/${task.count})`,
    });
  }

  finish(): Promise<void> {
    return removePartialDir(this.dir);
  }

  private async mkdirs(): Promise<void> {
    await mkdir(this.partial, { recursive: true });
  }
}

/**
 * Makes the output ready for one task of a job (or for the plan step): agrees with whatever
 * other tasks already recorded, without ever racing them. The job file, the layout (what the
 * merge needs: class list, splits ...) and the number of tasks are each created by the first
 * writer and compared by every later one: a difference is an error naming it. Temporaries are
 * removed only for the shards in `own`.
 */
export async function prepareTaskOutput(
  store: OutputStore,
  job: { fingerprint: string; layout: string; tasks?: number },
  own: ReadonlySet<string>,
): Promise<OutState> {
  const index = await store.readFile('index.json');
  if (index !== null) {
    if ((JSON.parse(index) as { job?: string }).job === job.fingerprint) return 'complete';
    throw new ShardJobError('already holds a different dataset (its index.json was made with other inputs or options); use another --out', store.location);
  }
  let previous = await store.readState(JOB_FILE);
  if (previous === null) {
    const strays = await store.listShardFiles();
    // Another task may have claimed the folder and written a shard since we looked.
    if (strays.length > 0 && (previous = await store.readState(JOB_FILE)) === null) {
      throw new ShardJobError(`is not empty (${strays[0]} ...) and was not made by this job; use another --out`, store.location);
    }
  }
  const existing = previous ?? (await store.claimState(JOB_FILE, job.fingerprint));
  if (existing !== null && existing !== job.fingerprint) {
    throw new ShardJobError(
      'holds an unfinished job with other inputs or options (another task or an earlier run wrote it); use the same source and options as the other tasks, or another --out',
      store.location,
    );
  }
  const layout = await store.claimState(LAYOUT_FILE, job.layout);
  if (layout !== null && layout !== job.layout) {
    throw new ShardJobError(
      `${PARTIAL_DIR}/${LAYOUT_FILE} (written by another task or the plan) differs from this task's listing of the same source: the source changed between listings. Make a plan once (npm run shard -- plan ...) so every task uses the same listing`,
      store.location,
    );
  }
  if (job.tasks !== undefined) {
    const tasks = JSON.stringify({ count: job.tasks });
    const recorded = await store.claimState(TASKS_FILE, tasks);
    if (recorded !== null && recorded !== tasks) {
      const n = (JSON.parse(recorded) as { count: number }).count;
      throw new ShardJobError(
        `this job is split into ${n} tasks, not ${job.tasks} (tasks of another split would write the same shards). Use --task I/${n}; or, once no task runs, remove ${PARTIAL_DIR}/${TASKS_FILE} to change the split`,
        store.location,
      );
    }
  }
  await store.removeTemporaries(own);
  return existing === null ? 'fresh' : 'resume';
}
