// Where every sample of a dataset is: shard, byte range of its label and of its image. Built
// from the shards' DALI .idx files when present (no tar walk), else from a header walk. The
// arrays live in SharedArrayBuffers so every loader thread reads them without a copy; ~30 bytes
// a sample (ImageNet-21k's 13M samples: ~400 MB).
import { existsSync, readFileSync } from 'node:fs';
import { scanTarFile } from '../webdataset/tar-reader.ts';
import { groupMemberInfos } from '../webdataset/samples.ts';
import { parseDaliIndex } from '../webdataset/dali-index.ts';
import { LABEL_EXTS } from '../webdataset/codecs.ts';
import { PathError } from '../errors.ts';

export const IMAGE_KINDS = ['npy', 'jpg', 'jpeg', 'png', 'webp'] as const;

export interface SampleTableBuffers {
  shardPaths: string[];
  count: number;
  shard: SharedArrayBuffer;
  imageOffset: SharedArrayBuffer;
  imageSize: SharedArrayBuffer;
  labelOffset: SharedArrayBuffer;
  labelSize: SharedArrayBuffer;
  /** Index into IMAGE_KINDS. */
  imageKind: SharedArrayBuffer;
  /** Index into LABEL_EXTS. */
  labelKind: SharedArrayBuffer;
  /** Per sample, 1 once a thread has checked its members against the tar headers (member-check.ts). */
  checked: SharedArrayBuffer;
  keyBytes: SharedArrayBuffer;
  keyEnds: SharedArrayBuffer;
}

export class SampleTableError extends PathError {}

/** Typed views over the shared buffers (cheap: make one per thread). */
export class SampleTable {
  readonly count: number;
  readonly shardPaths: string[];
  readonly shard: Uint32Array;
  readonly imageOffset: Float64Array;
  readonly imageSize: Uint32Array;
  readonly labelOffset: Float64Array;
  readonly labelSize: Uint32Array;
  readonly imageKind: Uint8Array;
  readonly labelKind: Uint8Array;
  readonly checked: Uint8Array;
  private readonly keyBytes: Uint8Array;
  private readonly keyEnds: Uint32Array;

  constructor(readonly buffers: SampleTableBuffers) {
    this.count = buffers.count;
    this.shardPaths = buffers.shardPaths;
    this.shard = new Uint32Array(buffers.shard);
    this.imageOffset = new Float64Array(buffers.imageOffset);
    this.imageSize = new Uint32Array(buffers.imageSize);
    this.labelOffset = new Float64Array(buffers.labelOffset);
    this.labelSize = new Uint32Array(buffers.labelSize);
    this.imageKind = new Uint8Array(buffers.imageKind);
    this.labelKind = new Uint8Array(buffers.labelKind);
    this.checked = new Uint8Array(buffers.checked);
    this.keyBytes = new Uint8Array(buffers.keyBytes);
    this.keyEnds = new Uint32Array(buffers.keyEnds);
  }

  key(i: number): string {
    const start = i === 0 ? 0 : this.keyEnds[i - 1]!;
    return Buffer.from(this.keyBytes.buffer, start, this.keyEnds[i]! - start).toString('utf8');
  }

  /** The key's UTF-8 bytes, a view (no copy, no string). */
  keyBytesOf(i: number): Uint8Array {
    const start = i === 0 ? 0 : this.keyEnds[i - 1]!;
    return this.keyBytes.subarray(start, this.keyEnds[i]!);
  }

  /** Longest key in UTF-8 bytes (sizes the frame header). */
  maxKeyBytes(): number {
    let max = 0;
    let prev = 0;
    for (let i = 0; i < this.count; i++) {
      const end = this.keyEnds[i]!;
      if (end - prev > max) max = end - prev;
      prev = end;
    }
    return max;
  }

  get bytes(): number {
    const b = this.buffers;
    return [b.shard, b.imageOffset, b.imageSize, b.labelOffset, b.labelSize, b.imageKind, b.labelKind, b.checked, b.keyBytes, b.keyEnds].reduce(
      (a, x) => a + x.byteLength,
      0,
    );
  }
}

interface Row {
  key: string;
  image: { ext: string; offset: number; size: number };
  label: { ext: string; offset: number; size: number };
}

function rowsFromMembers(key: string, members: Record<string, { offset: number; size: number }>, shard: string): Row {
  const imageExt = IMAGE_KINDS.find((e) => members[e]);
  const labelExt = LABEL_EXTS.find((e) => members[e]);
  if (!imageExt) throw new SampleTableError(`sample ${key} has no image member (${IMAGE_KINDS.join(', ')})`, shard);
  if (!labelExt) throw new SampleTableError(`sample ${key} has no label member (${LABEL_EXTS.join(', ')})`, shard);
  return { key, image: { ext: imageExt, ...members[imageExt]! }, label: { ext: labelExt, ...members[labelExt]! } };
}

async function shardRows(path: string): Promise<Row[]> {
  const idx = path.replace(/\.tar$/, '.idx');
  if (idx !== path && existsSync(idx)) {
    return parseDaliIndex(readFileSync(idx, 'utf8')).map((components) => {
      const members: Record<string, { offset: number; size: number }> = {};
      for (const c of components) members[c.ext] = { offset: c.offset, size: c.size };
      const name = components[0]?.name ?? '';
      const key = name.slice(0, name.length - (components[0]?.ext.length ?? 0) - 1);
      return rowsFromMembers(key, members, path);
    });
  }
  if (!existsSync(path)) throw new SampleTableError('shard does not exist', path);
  return groupMemberInfos(await scanTarFile(path), { url: path }).map((s) => rowsFromMembers(s.key, s.members, path));
}

function shared(bytes: number): SharedArrayBuffer {
  return new SharedArrayBuffer(Math.max(8, bytes));
}

export async function buildSampleTable(shardPaths: string[], expected?: number[]): Promise<SampleTable> {
  const all: Row[][] = [];
  for (let s = 0; s < shardPaths.length; s++) {
    const rows = await shardRows(shardPaths[s]!);
    if (expected && expected[s] !== undefined && expected[s] !== rows.length) {
      throw new SampleTableError(`index says ${expected[s]} samples, shard has ${rows.length}`, shardPaths[s]);
    }
    all.push(rows);
  }
  const count = all.reduce((a, r) => a + r.length, 0);
  const keyLength = all.reduce((a, rows) => a + rows.reduce((b, r) => b + Buffer.byteLength(r.key), 0), 0);
  const buffers: SampleTableBuffers = {
    shardPaths,
    count,
    shard: shared(4 * count),
    imageOffset: shared(8 * count),
    imageSize: shared(4 * count),
    labelOffset: shared(8 * count),
    labelSize: shared(4 * count),
    imageKind: shared(count),
    labelKind: shared(count),
    checked: shared(count),
    keyBytes: shared(keyLength),
    keyEnds: shared(4 * count),
  };
  const t = new SampleTable(buffers);
  const keyBytes = Buffer.from(buffers.keyBytes);
  const keyEnds = new Uint32Array(buffers.keyEnds);
  let i = 0;
  let k = 0;
  all.forEach((rows, s) => {
    for (const r of rows) {
      t.shard[i] = s;
      t.imageOffset[i] = r.image.offset;
      t.imageSize[i] = r.image.size;
      t.labelOffset[i] = r.label.offset;
      t.labelSize[i] = r.label.size;
      t.imageKind[i] = IMAGE_KINDS.indexOf(r.image.ext as (typeof IMAGE_KINDS)[number]);
      t.labelKind[i] = LABEL_EXTS.indexOf(r.label.ext);
      k += keyBytes.write(r.key, k);
      keyEnds[i] = k;
      i++;
    }
  });
  return t;
}
