// Opening a dataset for loading: an index.json (ours or any wids index), a folder holding one,
// or shard paths with brace patterns. Yields the sample table and what the index says about
// the images (classes, channels, resolution, per-channel statistics).
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { expandUrls } from '../webdataset/urls.ts';
import { readWidsIndex } from '../webdataset/wids-index.ts';
import { buildSampleTable, SampleTableError, type SampleTable } from './sample-table.ts';
import { defaultCacheDir, localShard } from './shard-cache.ts';

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
}

function resolveSpec(spec: string): string {
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

export async function openDataset(spec: string, opts: OpenDatasetOptions = {}): Promise<OpenedDataset> {
  const cacheDir = opts.cacheDir ?? defaultCacheDir();
  const resolved = resolveSpec(spec);
  if (resolved.endsWith('.json')) {
    const index = await readWidsIndex(resolved);
    if (index.shardlist.length === 0) throw new SampleTableError('the index lists no shards', resolved);
    const paths: string[] = [];
    for (let i = 0; i < index.resolvedUrls.length; i++) {
      const entry = index.shardlist[i]!;
      const path = await localShard(index.resolvedUrls[i]!, cacheDir, entry.md5sum);
      await checkShard(path, entry, resolved, opts.verify ?? false);
      paths.push(path);
    }
    const table = await buildSampleTable(
      paths,
      index.shardlist.map((s) => s.nsamples),
    );
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
    };
  }
  const paths: string[] = [];
  for (const url of expandUrls(spec)) paths.push(await localShard(url, cacheDir));
  const table = await buildSampleTable(paths);
  return { table, classes: [], numClasses: 0, channels: 3, resolution: null, mean: null, std: null, source: spec };
}
