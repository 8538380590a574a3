// MNIST-style idx files (MNIST, Fashion-MNIST, KMNIST...): big-endian header, magic
// 0x00000803 for uint8 images [n, rows, cols], 0x00000801 for uint8 labels [n]. Gzipped or not.
import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { requireFile } from './check-path.ts';
import { expectPaths, gatherPixels, SourceError, type CatalogSource, type SourceDefinition } from './types.ts';

export interface IdxArray {
  dims: number[];
  data: Uint8Array;
}

export async function readIdxFile(path: string): Promise<IdxArray> {
  await requireFile(path, 'idx file');
  let bytes: Uint8Array = await readFile(path);
  if (bytes[0] === 0x1f && bytes[1] === 0x8b) {
    try {
      bytes = gunzipSync(bytes);
    } catch (err) {
      throw new SourceError(`corrupt gzip: ${(err as Error).message}`, path);
    }
  }
  return parseIdx(bytes, path);
}

export function parseIdx(bytes: Uint8Array, file: string): IdxArray {
  if (bytes.length < 4) throw new SourceError('too short for an idx header', file);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint16(0) !== 0 || bytes[2] !== 0x08) {
    throw new SourceError(`not an idx file of uint8 (magic ${view.getUint32(0).toString(16).padStart(8, '0')})`, file);
  }
  const ndim = bytes[3]!;
  const headerSize = 4 + 4 * ndim;
  if (ndim === 0 || bytes.length < headerSize) throw new SourceError('truncated idx header', file);
  const dims: number[] = [];
  for (let i = 0; i < ndim; i++) dims.push(view.getUint32(4 + 4 * i));
  const size = dims.reduce((a, b) => a * b, 1);
  if (bytes.length < headerSize + size) {
    throw new SourceError(`truncated: header says ${size} bytes of data, file has ${bytes.length - headerSize}`, file);
  }
  return { dims, data: bytes.subarray(headerSize, headerSize + size) };
}

export async function openIdx(imagesPath: string, labelsPath: string): Promise<CatalogSource> {
  const images = await readIdxFile(imagesPath);
  const labels = await readIdxFile(labelsPath);
  if (images.dims.length !== 3) throw new SourceError(`expected images of shape [n, rows, cols], got [${images.dims}]`, imagesPath);
  if (labels.dims.length !== 1) throw new SourceError(`expected labels of shape [n], got [${labels.dims}]`, labelsPath);
  const [n, rows, cols] = images.dims as [number, number, number];
  if (labels.dims[0] !== n) {
    throw new SourceError(`${n} images but ${labels.dims[0]} labels in ${labelsPath}`, imagesPath);
  }
  let maxLabel = 0;
  for (const l of labels.data) maxLabel = Math.max(maxLabel, l);
  const pixels = rows * cols;
  return {
    mode: 'catalog',
    kind: 'idx',
    classes: Array.from({ length: maxLabel + 1 }, (_, i) => String(i)),
    channels: 1,
    count: n,
    shuffle: true,
    listingErrors: [],
    description: `idx ${imagesPath} + ${labelsPath}: ${n} images ${rows}x${cols}, ${maxLabel + 1} classes`,
    load(indices) {
      return Promise.resolve(
        gatherPixels(
          indices,
          { width: cols, height: rows, channels: 1, layout: 'hwc', name: imagesPath },
          (i) => images.data.subarray(i * pixels, (i + 1) * pixels),
          (i) => labels.data[i]!,
        ),
      );
    },
  };
}

export const idxSource: SourceDefinition = {
  kind: 'idx',
  args: '<images> <labels>',
  help: 'MNIST-style idx files (.gz or not); stays 1-channel',
  open: (o) => {
    expectPaths(o.kind, o.paths, 2, '<images-idx> <labels-idx>');
    return openIdx(o.paths[0]!, o.paths[1]!);
  },
};
