// Remote shards (http(s)://, s3://) are fetched whole into a local cache and then read by offset,
// as the wids reader does: the global shuffle reads every sample of every shard in random order,
// and a request per image would cost a round trip per image (bench/s3-read.ts measures both). A
// download streams to a temporary name, is checked against the index's md5, then renamed.
//
// The cache is shared by every process on the host (see cache-dir.ts): a shard another process is
// downloading is waited for, never read half-way nor fetched twice; with SMLP_SHARD_CACHE_MAX the
// least recently used shards that no live process reads are evicted to stay under the limit.
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, renameSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { tempPathFor } from '../../shared/atomic-write.ts';
import { openUrl } from '../webdataset/open-url.ts';
import { CacheDir, ShardCacheError } from './cache-dir.ts';
import { SampleTableError } from './sample-table.ts';

export { ShardCacheError } from './cache-dir.ts';

/** The downloaded bytes are not the ones the index lists (md5). */
export class ShardChecksumError extends SampleTableError {
  constructor(
    readonly url: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(
      `md5 mismatch after download: the index says ${expected}, the bytes fetched hash to ${actual} (damaged in transit, or the object was replaced after the index was written)`,
      url,
    );
  }
}

/** A dataset's shards do not fit under SMLP_SHARD_CACHE_MAX at all. */
export class ShardCacheLimitError extends ShardCacheError {}

export function defaultCacheDir(): string {
  return process.env['SMLP_SHARD_CACHE'] ?? join(tmpdir(), 'smlp-shard-cache');
}

export function isRemote(url: string): boolean {
  return /^(https?|s3):\/\//i.test(url);
}

const UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 };

/** "10G", "500M", "1.5T", "65536": bytes, with K/M/G/T as powers of 1024 (KiB, MiB...; a trailing B or iB is allowed). */
export function parseByteSize(text: string, what = 'size'): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$/i.exec(text);
  if (!m) throw new ShardCacheError(`${what} ${JSON.stringify(text)} is not a byte count (like 10G, 500M, 65536)`);
  return Math.floor(Number(m[1]) * UNITS[m[2]!.toLowerCase()]!);
}

/** SMLP_SHARD_CACHE_MAX in bytes; no limit when unset or empty. */
export function cacheLimitFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const v = env['SMLP_SHARD_CACHE_MAX'];
  return v === undefined || v.trim() === '' ? Number.POSITIVE_INFINITY : parseByteSize(v, 'SMLP_SHARD_CACHE_MAX');
}

export interface FetchedShard {
  url: string;
  path: string;
  /** local: not a remote URL; hit: in the cache; downloaded: by this call; waited: another process downloaded it meanwhile. */
  status: 'local' | 'hit' | 'downloaded' | 'waited';
  bytes: number;
  /** Cache entry name (null for local files). */
  name: string | null;
}

export interface CacheStats {
  hits: number;
  downloaded: number;
  waited: number;
  /** Bytes downloaded and the seconds spent downloading them (summed over downloads). */
  bytes: number;
  seconds: number;
  evicted: number;
  evictedBytes: number;
  /** The cache is over its limit because everything left is in use. */
  overLimit: boolean;
}

export function emptyStats(): CacheStats {
  return { hits: 0, downloaded: 0, waited: 0, bytes: 0, seconds: 0, evicted: 0, evictedBytes: 0, overLimit: false };
}

/** One line for logs: what fetching a dataset's remote shards did. */
export function describeCacheStats(s: CacheStats): string {
  const mb = s.bytes / 1e6;
  const parts = [
    `remote shards: ${s.downloaded} downloaded (${mb.toFixed(1)} MB${s.seconds > 0 ? `, ${(mb / s.seconds).toFixed(1)} MB/s` : ''})`,
    `${s.hits} from the cache`,
  ];
  if (s.waited > 0) parts.push(`${s.waited} fetched by another process`);
  if (s.evicted > 0) parts.push(`${s.evicted} evicted (${(s.evictedBytes / 1e6).toFixed(1)} MB)`);
  if (s.overLimit) parts.push('the cache is over SMLP_SHARD_CACHE_MAX: every other shard in it is in use');
  return parts.join(', ');
}

export interface ShardRef {
  url: string;
  md5?: string | undefined;
  /** Size the index gives (lets eviction make room before the download). */
  size?: number | undefined;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** The cache entry of a URL: its basename for people, a hash of URL and md5 so a changed index never gets old bytes. */
export function cacheName(url: string, md5?: string): string {
  const base = url
    .split('/')
    .pop()!
    .replace(/[^\w.-]/g, '_')
    .replace(/^\.+/, '_');
  return `${createHash('sha1')
    .update(`${url}\n${md5 ?? ''}`)
    .digest('hex')
    .slice(0, 16)}-${base}`;
}

export class ShardCache {
  private static readonly open = new Map<string, ShardCache>();
  readonly dir: CacheDir;
  readonly stats: CacheStats = emptyStats();

  private constructor(
    dirPath: string,
    readonly maxBytes: number,
  ) {
    this.dir = CacheDir.at(dirPath);
  }

  /** The cache at `dir` (one object per folder in a process, so uses are counted once). */
  static at(dir: string, maxBytes = cacheLimitFromEnv()): ShardCache {
    const key = `${resolve(dir)}\n${maxBytes}`;
    let c = ShardCache.open.get(key);
    if (!c) {
      c = new ShardCache(resolve(dir), maxBytes);
      ShardCache.open.set(key, c);
    }
    return c;
  }

  /**
   * A local path for `ref.url`, downloading it if needed, marked as in use by this process until
   * release() (or exit): eviction by any process leaves it alone meanwhile.
   */
  async fetch(ref: ShardRef): Promise<FetchedShard> {
    const { url } = ref;
    if (!isRemote(url)) return { url, path: url.replace(/^file:\/\//, ''), status: 'local', bytes: 0, name: null };
    const name = cacheName(url, ref.md5);
    const path = this.dir.pathOf(name);
    this.dir.ensure();
    let waited = false;
    for (let attempt = 0; ; attempt++) {
      const hit = await this.dir.exclusive(() => {
        if (!existsSync(path)) return false;
        this.dir.markInUse(name);
        this.dir.touch(name);
        return true;
      });
      if (hit) {
        if (waited) this.stats.waited++;
        else this.stats.hits++;
        return { url, path, status: waited ? 'waited' : 'hit', bytes: 0, name };
      }
      const lock = this.dir.tryDownloadLock(name);
      if (lock === null) {
        // Another process is downloading it: wait for its rename (or for its lock to go stale).
        waited = true;
        await sleep(Math.min(50 * (attempt + 1), 500));
        continue;
      }
      try {
        if (existsSync(path)) continue; // finished between our look and our lock
        if (Number.isFinite(this.maxBytes)) await this.makeRoom(ref.size ?? 0, name);
        const t0 = performance.now();
        const bytes = await this.download(url, path, name, ref.md5);
        this.stats.downloaded++;
        this.stats.bytes += bytes;
        this.stats.seconds += (performance.now() - t0) / 1000;
        // The size was not known before the download: get back under the limit now.
        if (Number.isFinite(this.maxBytes)) await this.makeRoom(0, name);
        return { url, path, status: 'downloaded', bytes, name };
      } finally {
        lock.release();
      }
    }
  }

  /** Fetches `refs` (`concurrency` downloads at a time), in order. Throws when they cannot fit under the limit together. */
  async fetchAll(refs: readonly ShardRef[], opts: { concurrency?: number; source?: string } = {}): Promise<FetchedShard[]> {
    const remote = refs.filter((r) => isRemote(r.url));
    const need = remote.reduce((s, r) => s + (r.size ?? 0), 0);
    if (need > this.maxBytes) {
      throw new ShardCacheLimitError(
        `the dataset's ${remote.length} remote shards take ${need} bytes, more than SMLP_SHARD_CACHE_MAX (${this.maxBytes} bytes); a run reads all of its shards from local disk at once: raise the limit, or point SMLP_SHARD_CACHE at a larger disk`,
        opts.source,
      );
    }
    const out: FetchedShard[] = new Array(refs.length);
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < refs.length) {
        const i = next++;
        out[i] = await this.fetch(refs[i]!);
      }
    };
    try {
      await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency ?? 4, refs.length)) }, worker));
    } catch (e) {
      for (const s of out) if (s) this.release(s);
      throw e;
    }
    return out;
  }

  /** This process no longer reads `shard`: it may be evicted (by anyone) once nobody else does. */
  release(shard: FetchedShard): void {
    if (shard.name !== null) this.dir.release(shard.name);
  }

  private async makeRoom(incoming: number, keep: string): Promise<void> {
    const r = await this.dir.exclusive(() => this.dir.evict(this.maxBytes, incoming, new Set([keep])));
    this.stats.evicted += r.evicted.length;
    this.stats.evictedBytes += r.evicted.reduce((s, e) => s + e.size, 0);
    if (r.over) this.stats.overLimit = true;
  }

  private async download(url: string, path: string, name: string, md5: string | undefined): Promise<number> {
    const tmp = tempPathFor(path);
    const hash = createHash('md5');
    const out = createWriteStream(tmp);
    let bytes = 0;
    try {
      // openUrl gunzips .tar.gz transparently: the cache holds plain tars, as offsets need.
      for await (const chunk of await openUrl(url)) {
        hash.update(chunk);
        bytes += chunk.length;
        if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
      }
      await new Promise<void>((res, rej) => out.end((err?: Error | null) => (err ? rej(err) : res())));
      const got = hash.digest('hex');
      if (md5 && got !== md5) throw new ShardChecksumError(url, md5, got);
      await this.dir.exclusive(() => {
        renameSync(tmp, path);
        this.dir.markInUse(name);
        this.dir.touch(name);
      });
      return bytes;
    } catch (err) {
      out.destroy();
      await rm(tmp, { force: true });
      throw err;
    }
  }
}

/** Local path of `url`, downloading it first if needed (kept in use until exit). Local paths are returned as they are. */
export async function localShard(url: string, cacheDir: string, md5?: string): Promise<string> {
  return (await ShardCache.at(cacheDir).fetch({ url, md5 })).path;
}
