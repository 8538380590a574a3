// The shard job's output on S3 (or an S3-compatible store): `--out s3://bucket/prefix`. Tars are
// written to a local staging folder (os.tmpdir()/smlp-shard-staging-<pid>-<random>, one per
// process), and once a shard is complete publishShard uploads it (multipart for large ones) and
// removes the staged file; then the job writes its .idx, then its record under <prefix>/.partial/.
// The record is what makes a shard count as done, and one whose tar object is missing or of
// another size is not trusted, so nothing half-written is ever taken for complete. S3 objects
// appear whole or not at all, so no temporary names are needed there.
//
// Put-if-absent (claimState, the locks): PutObject with If-None-Match: * where the store honours
// it (AWS S3 since 2024), which makes exactly one writer first. Stores that ignore the header
// (s3rver, which the tests use, and some S3-compatible servers) overwrite instead, so every claim
// is also HEAD before and re-read after: there two writers of DIFFERENT content racing within one
// request's time can both believe they won (each re-reads its own write before the other's lands).
// That needs two different jobs started on one prefix within milliseconds; same-content writers
// (the tasks of one job) are always right. The task lock on such a store is likewise not a strict
// mutex: two takers racing within one round trip may both hold it for up to one heartbeat, after
// which the one whose content was overwritten notices and stops refreshing (but does not stop
// writing). What it reliably does: keeps a rerun from racing a live task of the same host, and
// lets a task killed with its machine be taken over after one lease.
import { randomBytes } from 'node:crypto';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { isProcessAlive } from '../../shared/lock-file.ts';
import { OutputLockedError, type LockHolder } from '../../shared/output-lock.ts';
import {
  abortMultipartUploads,
  deleteObject,
  getObjectBytes,
  headObject,
  isS3Url,
  listObjects,
  putObject,
  putObjectIfAbsent,
  S3NoSuchKeyError,
  uploadFile,
} from '../../shared/s3.ts';
import { validateWidsIndex, type WidsIndex } from '../webdataset/wids-index.ts';
import { ShardJobError } from './errors.ts';
import { PARTIAL_DIR, type ShardRecord } from './job-state.ts';
import { JOB_FILE, LocalOutputStore, type OutState, type OutputStore } from './output-store.ts';
import { DEFAULT_TASK_LEASE_MS, type TaskLock, type TaskLockOptions } from './task-lock.ts';
import type { ShardTaskId } from './task-id.ts';

/** The one place an `--out` becomes a store: s3:// URLs go to S3, anything else is a folder. */
export function openOutputStore(out: string): OutputStore {
  return isS3Url(out) ? new S3OutputStore(out) : new LocalOutputStore(out);
}

/** `<out>/<file>` for messages: a URL keeps its `//`. */
export function outputPath(out: string, file: string): string {
  return isS3Url(out) ? `${out.replace(/\/+$/, '')}/${file}` : join(out, file);
}

const STAGING_PREFIX = 'smlp-shard-staging-';
/** A top-level file the shard job writes (what --overwrite removes). */
const OURS = /^(index\.json|val\.json|errors\.jsonl|[\w.-]+-\d{6}\.(tar|idx))$/;
const SHARD = /^[\w.-]+-\d{6}\.tar$/;

/** Staging folders of processes of this host that died (a SIGKILL leaves them behind). */
function removeDeadStaging(): void {
  for (const d of readdirSync(tmpdir()).filter((n) => n.startsWith(STAGING_PREFIX))) {
    const pid = Number(/^smlp-shard-staging-(\d+)-/.exec(d)?.[1]);
    if (Number.isInteger(pid) && pid !== process.pid && !isProcessAlive(pid)) rmSync(join(tmpdir(), d), { recursive: true, force: true });
  }
}

async function getText(url: string): Promise<string | null> {
  try {
    return (await getObjectBytes(url)).toString('utf8');
  } catch (e) {
    if (e instanceof S3NoSuchKeyError) return null;
    throw e;
  }
}

/**
 * Put-if-absent with a re-read: null when this writer's content is what the key holds, else the
 * content found (see the header for the race on stores without conditional writes).
 */
async function claimObject(url: string, data: string): Promise<string | null> {
  const before = await getText(url);
  if (before !== null) return before;
  if (!(await putObjectIfAbsent(url, data))) return getText(url);
  const after = await getText(url);
  return after === null || after === data ? null : after;
}

export class S3OutputStore implements OutputStore {
  readonly location: string;
  private readonly base: string;
  private staging: string | null = null;
  private readonly cleanup = (): void => this.removeStaging();

  constructor(url: string) {
    this.location = url;
    this.base = url.replace(/\/+$/, '');
  }

  /** The object URL of a top-level file or (with PARTIAL_DIR) a state file. */
  url(name: string): string {
    return `${this.base}/${name}`;
  }

  private stateUrl(name: string): string {
    return this.url(`${PARTIAL_DIR}/${name}`);
  }

  shardPath(shard: string): string {
    if (this.staging === null) {
      removeDeadStaging();
      this.staging = join(tmpdir(), `${STAGING_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`);
      mkdirSync(this.staging, { recursive: true });
      process.once('exit', this.cleanup);
    }
    return join(this.staging, shard);
  }

  async publishShard(shard: string, info: { size: number }): Promise<void> {
    const path = this.shardPath(shard);
    await uploadFile(path, this.url(shard));
    rmSync(path, { force: true });
    // A store that lost or truncated the upload would make a record that is never trusted.
    const head = await headObject(this.url(shard));
    if (head.size !== info.size) throw new ShardJobError(`uploaded ${info.size} bytes, the object holds ${head.size}`, this.url(shard));
  }

  async prepare(fingerprint: string, overwrite: boolean): Promise<OutState> {
    if (overwrite) await this.removeOurObjects();
    const index = await getText(this.url('index.json'));
    if (index !== null) {
      if ((JSON.parse(index) as { job?: string }).job === fingerprint) {
        await this.finish();
        return 'complete';
      }
      throw new ShardJobError(
        'already holds a different dataset (its index.json was made with other inputs or options); use another --out or --overwrite',
        this.location,
      );
    }
    const previous = await this.readState(JOB_FILE);
    if (previous !== null && previous !== fingerprint) {
      throw new ShardJobError('holds an unfinished job with other inputs or options; use another --out or --overwrite', this.location);
    }
    if (previous === null) {
      const strays = await this.listShardFiles();
      if (strays.length > 0)
        throw new ShardJobError(`is not empty (${strays[0]} ...) and was not made by this job; use another --out or --overwrite`, this.location);
    }
    await this.removeTemporaries();
    await this.writeState(JOB_FILE, fingerprint);
    return previous === null ? 'fresh' : 'resume';
  }

  async readRecord(shard: string): Promise<ShardRecord | null> {
    const text = await getText(this.stateUrl(`${shard}.json`));
    if (text === null) return null;
    const record = JSON.parse(text) as ShardRecord;
    try {
      const tar = await headObject(this.url(shard));
      return tar.size === record.filesize ? record : null;
    } catch (e) {
      if (e instanceof S3NoSuchKeyError) return null;
      throw e;
    }
  }

  async writeRecord(shard: string, record: ShardRecord): Promise<void> {
    await putObject(this.stateUrl(`${shard}.json`), JSON.stringify(record));
  }

  readState(name: string): Promise<string | null> {
    return getText(this.stateUrl(name));
  }

  async readStateBytes(name: string, offset: number, length: number): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    return new Uint8Array(await getObjectBytes(this.stateUrl(name), { range: { offset, length } }));
  }

  async writeState(name: string, data: string | Uint8Array): Promise<void> {
    await putObject(this.stateUrl(name), data);
  }

  claimState(name: string, data: string): Promise<string | null> {
    return claimObject(this.stateUrl(name), data);
  }

  readFile(name: string): Promise<string | null> {
    return getText(this.url(name));
  }

  async listShardFiles(): Promise<string[]> {
    return (await this.topLevel()).filter((n) => n.endsWith('.tar'));
  }

  async writeFile(name: string, data: string | Uint8Array): Promise<void> {
    await putObject(this.url(name), data);
  }

  async writeIndex(name: string, index: WidsIndex): Promise<void> {
    validateWidsIndex(index, this.url(name));
    // The same bytes as writeWidsIndex writes to a folder.
    await putObject(this.url(name), `${JSON.stringify(index, null, 2)}\n`);
  }

  /**
   * Staged tars of dead processes of this host, and the store's unfinished multipart uploads of
   * these shards (of all shards without `own`). Stores without ListMultipartUploads keep the
   * parts of a killed upload until a bucket lifecycle rule (AbortIncompleteMultipartUpload)
   * removes them; they are never visible as objects.
   */
  async removeTemporaries(own?: ReadonlySet<string>): Promise<void> {
    removeDeadStaging();
    const prefix = this.base.replace(/^s3:\/\/[^/]+\/?/, '');
    const at = prefix ? `${prefix}/` : '';
    await abortMultipartUploads(this.url(''), (key) => {
      if (!key.startsWith(at)) return false;
      const name = key.slice(at.length);
      return own ? own.has(name) : SHARD.test(name);
    });
  }

  async lockTask(task: ShardTaskId, command: string, o: Omit<TaskLockOptions, 'what'> = {}): Promise<TaskLock> {
    await assertS3NotLocked(this);
    if ((await this.readFile('index.json')) !== null) return { file: '', release: () => undefined };
    return acquireS3Lock(this.stateUrl(`task-${String(task.index).padStart(6, '0')}.lock`), command, {
      ...o,
      what: `${this.location} (task ${task.index}/${task.count})`,
    });
  }

  /** The job state goes; the staging folder too. */
  async finish(): Promise<void> {
    for (const o of await listObjects(this.url(`${PARTIAL_DIR}/`))) await deleteObject(o.url);
    this.removeStaging();
  }

  private removeStaging(): void {
    if (this.staging === null) return;
    rmSync(this.staging, { recursive: true, force: true });
    this.staging = null;
    process.off('exit', this.cleanup);
  }

  private async topLevel(): Promise<string[]> {
    const at = `${this.base}/`;
    return (await listObjects(at)).map((o) => o.url.slice(at.length)).filter((n) => n.length > 0 && !n.includes('/'));
  }

  private async removeOurObjects(): Promise<void> {
    for (const n of await this.topLevel()) if (OURS.test(n)) await deleteObject(this.url(n));
    for (const o of await listObjects(this.url(`${PARTIAL_DIR}/`))) {
      if (!o.url.endsWith('.lock')) await deleteObject(o.url);
    }
  }
}

interface S3Holder extends LockHolder {
  token: string;
  beat: number;
}

function parseHolder(raw: string | null): S3Holder | null {
  if (raw === null) return null;
  try {
    const h = JSON.parse(raw) as Partial<S3Holder>;
    if (typeof h.pid !== 'number' || typeof h.host !== 'string') return null;
    return {
      pid: h.pid,
      host: h.host,
      command: String(h.command ?? ''),
      since: String(h.since ?? ''),
      token: String(h.token ?? ''),
      beat: Number(h.beat ?? 0),
    };
  } catch {
    return null;
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * task-lock.ts's rule on an object: the holder rewrites the lock (its `beat` counting up) every
 * lease/4; a lock whose content did not change for a whole lease, by the waiter's own clock, is
 * taken over; on the holder's own host a dead pid is taken over at once and a live one refuses.
 */
export async function acquireS3Lock(url: string, command: string, o: TaskLockOptions): Promise<TaskLock> {
  const lease = o.leaseMs ?? DEFAULT_TASK_LEASE_MS;
  const poll = Math.max(1, Math.min(o.pollMs ?? 1000, lease / 4));
  const me: S3Holder = { pid: process.pid, host: hostname(), command, since: new Date().toISOString(), token: randomBytes(8).toString('hex'), beat: 0 };
  const mine = (): string => `${JSON.stringify(me)}\n`;
  let observed: { raw: string; at: number } | null = null;
  let told = false;
  for (;;) {
    const found = await claimObject(url, mine());
    if (found === null) break;
    const holder = parseHolder(found);
    let stale: string | null = null;
    if (holder && holder.host === me.host) {
      if (holder.pid !== me.pid && !isProcessAlive(holder.pid)) stale = `its process ${holder.pid} no longer runs`;
      else throw new OutputLockedError(o.what, url, holder);
    } else {
      const now = performance.now();
      if (!observed || observed.raw !== found) observed = { raw: found, at: now };
      else if (now - observed.at >= lease) stale = `not refreshed for ${lease >= 1000 ? `${Math.round(lease / 1000)} s` : `${lease} ms`}`;
      if (!stale && !told) {
        told = true;
        o.onWait?.(holder);
      }
    }
    if (stale) {
      // Remove only the lock judged stale, not one another waiter has just taken over.
      if ((await getText(url)) === found) {
        await deleteObject(url);
        o.onTakeover?.(holder, stale);
      }
      observed = null;
      continue;
    }
    await sleep(poll);
  }
  let lost = false;
  let beating: Promise<void> = Promise.resolve();
  const beat = setInterval(
    () => {
      beating = (async () => {
        if (lost) return;
        const now = parseHolder(await getText(url).catch(() => null));
        if (now?.token !== me.token) {
          lost = true; // taken over or removed: never overwrite another holder's lock
          return;
        }
        me.beat++;
        await putObject(url, mine());
      })().catch(() => undefined);
    },
    Math.max(1, lease / 4),
  );
  beat.unref();
  let released: Promise<void> | null = null;
  const release = (): Promise<void> => {
    released ??= (async () => {
      clearInterval(beat);
      await beating;
      const h = parseHolder(await getText(url).catch(() => null));
      if (h?.token === me.token) await deleteObject(url).catch(() => undefined);
    })();
    return released;
  };
  return { file: url, release };
}

/** The lock of a whole-job run, plan or merge on an S3 output (the folder lock's counterpart). */
export function s3OutputLockUrl(store: S3OutputStore): string {
  return store.url('.lock');
}

/** Tasks do not write while a whole-job run, plan or merge holds the output (a dead one of this host does not count). */
async function assertS3NotLocked(store: S3OutputStore): Promise<void> {
  const url = s3OutputLockUrl(store);
  const raw = await getText(url);
  if (raw === null) return;
  const holder = parseHolder(raw);
  if (holder && holder.host === hostname() && !isProcessAlive(holder.pid)) return;
  throw new OutputLockedError(store.location, url, holder);
}

/** withOutputLock for an s3:// output: the lock is the object <prefix>/.lock. */
export async function withS3OutputLock<T>(out: string, command: string, io: { stderr(s: string): unknown }, body: () => Promise<T>): Promise<T> {
  const store = new S3OutputStore(out);
  const lock = await acquireS3Lock(s3OutputLockUrl(store), command, {
    what: out,
    onWait: (h) =>
      io.stderr(
        `note: ${out} is locked by ${h ? `pid ${h.pid} on ${h.host} (${h.command})` : 'an unreadable lock'}; waiting until it is released or not refreshed for a minute\n`,
      ),
    onTakeover: (h, why) => io.stderr(`note: took over the lock of ${out}${h ? ` left by pid ${h.pid} on ${h.host}` : ''}: ${why}\n`),
  });
  try {
    return await body();
  } finally {
    await lock.release();
  }
}
