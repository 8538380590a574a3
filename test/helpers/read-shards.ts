// Reads a finished dataset back through the project's own WebDataset reader, for assertions.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeCls, decodeNpy } from '../../src/pipeline/webdataset/codecs.ts';
import { readShard } from '../../src/pipeline/webdataset/open-url.ts';

export interface ReadSample {
  shard: string;
  key: string;
  label: number;
  exts: string[];
  shape?: number[];
  pixels?: Uint8Array;
  jpg?: Uint8Array;
}

export interface DatasetIndex {
  shardlist: { url: string; nsamples: number; filesize: number; md5sum: string }[];
  [k: string]: unknown;
}

export function readIndex(dir: string, file = 'index.json'): DatasetIndex {
  return JSON.parse(readFileSync(join(dir, file), 'utf8')) as DatasetIndex;
}

export async function readDataset(dir: string, file = 'index.json'): Promise<ReadSample[]> {
  const index = readIndex(dir, file);
  const out: ReadSample[] = [];
  for (const s of index.shardlist) {
    for await (const sample of readShard(join(dir, s.url))) {
      const exts = Object.keys(sample)
        .filter((k) => !k.startsWith('__'))
        .sort();
      const r: ReadSample = { shard: s.url, key: sample.__key__, label: decodeCls(sample['cls'] as Uint8Array), exts };
      if (sample['npy']) {
        const npy = decodeNpy(sample['npy'] as Uint8Array);
        r.shape = npy.shape;
        r.pixels = Uint8Array.from(npy.data);
      }
      if (sample['jpg']) r.jpg = Uint8Array.from(sample['jpg'] as Uint8Array);
      out.push(r);
    }
  }
  return out;
}
