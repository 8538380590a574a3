// Opening a dataset for loading: an index.json (ours or any wids index), a folder holding one,
// or shard paths with brace patterns. Yields the sample table and what the index says about
// the images (classes, channels, resolution, per-channel statistics).
import { existsSync, statSync } from 'node:fs';
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

function numbers(v: unknown): number[] | null {
  return Array.isArray(v) && v.every((x) => typeof x === 'number') ? (v as number[]) : null;
}

export async function openDataset(spec: string, cacheDir = defaultCacheDir()): Promise<OpenedDataset> {
  const resolved = resolveSpec(spec);
  if (resolved.endsWith('.json')) {
    const index = await readWidsIndex(resolved);
    const paths: string[] = [];
    for (let i = 0; i < index.resolvedUrls.length; i++) {
      paths.push(await localShard(index.resolvedUrls[i]!, cacheDir, index.shardlist[i]!.md5sum));
    }
    const table = await buildSampleTable(paths, index.shardlist.map((s) => s.nsamples));
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
