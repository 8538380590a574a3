// Opening a dataset for loading: an index.json (ours or any wids index), a folder holding one,
// or shard paths with brace patterns. Yields the sample table and what the index says about
// the images (classes, channels, resolution, per-channel statistics).
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { expandUrls } from '../webdataset/urls.ts';
import { readWidsIndex } from '../webdataset/wids-index.ts';
import { buildSampleTable, SampleTableError, type SampleTable } from './sample-table.ts';
import { type CacheStats, defaultCacheDir, type FetchedShard, ShardCache } from './shard-cache.ts';

export interface OpenedDataset {
  table: SampleTable;
  classes: string[];
  numClasses: number;
  channels: 1 | 3;
  /** Resolution the shards were made at (images may be smaller: max-side). */
  resolution: number | null;
  /** Per-channel statistics in 0..255 units, when the index has them. */
  mean: number[] | null;
  std: number[] | null;
  source: string;
  /** Remote shards: what the cache did for this dataset (absent when every shard is local). */
  cache?: CacheStats;
  /** The shards are no longer read (the loader closed): the cache may evict them. */
  release(): void;
}

function resolveSpec(spec: string): string {
  // An s3:// "folder" (trailing slash, or a last key segment without an extension) means its
  // index.json, as a local folder does.
  if (/^s3:\/\//i.test(spec) && !spec.includes('::') && !/[{}]/.test(spec)) {
    const key = spec.slice(5).split('/').slice(1).join('/');
    if (!key.slice(key.lastIndexOf('/') + 1).includes('.')) return `${spec.replace(/\/+$/, '')}/index.json`;
  }
  if (!/^https?:\/\//.test(spec) && existsSync(spec) && statSync(spec).isDirectory()) {
    const index = join(spec, 'index.json');
    if (!existsSync(index)) throw new SampleTableError('folder has no index.json', spec);
    return index;
  }
  return spec;
}

/** md5 of a whole file, streamed (shards are hundreds of MB). */
export async function md5OfFile(path: string): Promise<string> {
  const hash = createHash('md5');
  for await (const chunk of createReadStream(path, { highWaterMark: 4 << 20 })) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export interface OpenDatasetOptions {
  /** Where remote shards are cached. */
  cacheDir?: string;
  /** Cache size limit in bytes (default SMLP_SHARD_CACHE_MAX, else none). */
  cacheMaxBytes?: number;
  /** Also check every shard's md5 against the index (reads every byte once; sizes are always checked). */
  verify?: boolean;
}

/**
 * A shard as the index describes it, or an error naming it: it must exist and have the index's
 * size (a missing, truncated or overwritten shard would otherwise be read as garbage, replaced
 * sample by sample, and reported as a valid run), and with `verify` the index's md5.
 */
async function checkShard(path: string, entry: { filesize?: unknown; md5sum?: unknown }, index: string, verify: boolean): Promise<void> {
  let size: number;
  try {
    const st = statSync(path);
    if (!st.isFile()) throw new SampleTableError(`is not a file (listed in ${index})`, path);
    size = st.size;
  } catch (e) {
    if (e instanceof SampleTableError) throw e;
    throw new SampleTableError(`shard does not exist (listed in ${index})`, path);
  }
  if (typeof entry.filesize === 'number' && entry.filesize !== size) {
    throw new SampleTableError(`shard is ${size} bytes, ${index} says ${entry.filesize}: truncated, overwritten or from another dataset`, path);
  }
  if (verify && typeof entry.md5sum === 'string' && entry.md5sum.length > 0) {
    const got = await md5OfFile(path);
    if (got !== entry.md5sum) throw new SampleTableError(`md5 ${got} does not match ${index}'s ${entry.md5sum}: the shard is damaged or was replaced`, path);
  }
}

function numbers(v: unknown): number[] | null {
  return Array.isArray(v) && v.every((x) => typeof x === 'number') ? (v as number[]) : null;
}

/** Shards through the cache, with what it did (counted per dataset) and a release of them all. */
async function fetchShards(
  cache: ShardCache,
  refs: { url: string; md5?: string | undefined; size?: number | undefined }[],
  source: string,
): Promise<{ shards: FetchedShard[]; stats: CacheStats | undefined; release: () => void }> {
  const before = { ...cache.stats };
  const t0 = performance.now();
  const shards = await cache.fetchAll(refs, { source });
  const wall = (performance.now() - t0) / 1000;
  const after = cache.stats;
  const remote = shards.some((s) => s.status !== 'local');
  const stats: CacheStats | undefined = remote
    ? {
        hits: after.hits - before.hits,
        downloaded: after.downloaded - before.downloaded,
        waited: after.waited - before.waited,
        bytes: after.bytes - before.bytes,
        // Wall time of the whole fetch (downloads overlap): bytes / seconds is the rate achieved.
        seconds: after.downloaded > before.downloaded ? wall : 0,
        evicted: after.evicted - before.evicted,
        evictedBytes: after.evictedBytes - before.evictedBytes,
        overLimit: after.overLimit,
      }
    : undefined;
  let released = false;
  const release = (): void => {
    if (released) return;
    released = true;
    for (const s of shards) cache.release(s);
  };
  return { shards, stats, release };
}

export async function openDataset(spec: string, opts: OpenDatasetOptions = {}): Promise<OpenedDataset> {
  const cache = ShardCache.at(opts.cacheDir ?? defaultCacheDir(), ...(opts.cacheMaxBytes !== undefined ? [opts.cacheMaxBytes] : []));
  const resolved = resolveSpec(spec);
  if (resolved.endsWith('.json')) {
    const index = await readWidsIndex(resolved);
    if (index.shardlist.length === 0) throw new SampleTableError('the index lists no shards', resolved);
    const refs = index.shardlist.map((e, i) => ({ url: index.resolvedUrls[i]!, md5: e.md5sum, size: e.filesize }));
    const got = await fetchShards(cache, refs, resolved);
    const paths = got.shards.map((s) => s.path);
    let table;
    try {
      for (let i = 0; i < paths.length; i++) await checkShard(paths[i]!, index.shardlist[i]!, resolved, opts.verify ?? false);
      table = await buildSampleTable(
        paths,
        index.shardlist.map((s) => s.nsamples),
      );
    } catch (e) {
      got.release();
      throw e;
    }
    const classes = Array.isArray(index['classes']) ? (index['classes'] as unknown[]).map(String) : [];
    const numClasses = typeof index['num_classes'] === 'number' ? index['num_classes'] : classes.length;
    return {
      table,
      classes,
      numClasses,
      channels: index['channels'] === 1 ? 1 : 3,
      resolution: typeof index['resolution'] === 'number' ? index['resolution'] : null,
      mean: numbers(index['mean']),
      std: numbers(index['std']),
      source: resolved,
      ...(got.stats ? { cache: got.stats } : {}),
      release: got.release,
    };
  }
  const got = await fetchShards(
    cache,
    expandUrls(spec).map((url) => ({ url })),
    spec,
  );
  let table;
  try {
    table = await buildSampleTable(got.shards.map((s) => s.path));
  } catch (e) {
    got.release();
    throw e;
  }
  return {
    table,
    classes: [],
    numClasses: 0,
    channels: 3,
    resolution: null,
    mean: null,
    std: null,
    source: spec,
    ...(got.stats ? { cache: got.stats } : {}),
    release: got.release,
  };
}
