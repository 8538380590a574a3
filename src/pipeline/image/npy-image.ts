// A stored .npy (uint8, H x W or H x W x C with C 1 or 3) as an image, without copying: what our
// raw shards hold, read by the loader and when re-sharding.
import { decodeNpy } from '../webdataset/codecs.ts';
import type { ErrorLocation } from '../webdataset/errors.ts';
import type { RawImage } from './types.ts';

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];

export function isNpy(b: Uint8Array): boolean {
  return MAGIC.every((m, i) => b[i] === m);
}

// The loader parses one header per sample, and a dataset's headers are nearly always the same
// bytes: the last distinct header and what it gave are kept per thread, and a payload starting
// with those exact bytes skips the parse (0.65-0.8 -> 0.2 us a sample in a microbenchmark; bench loader-stages, decode: 1.1 -> 0.4 with its timer).
let last: { header: Uint8Array; width: number; height: number; channels: 1 | 3; nbytes: number } | null = null;

function sameHeader(b: Uint8Array, header: Uint8Array): boolean {
  // memcmp: 0.10 us for a 128-byte header against 0.16 for a JS loop.
  return b.length >= header.length && Buffer.compare(header, b.subarray(0, header.length)) === 0;
}

export function parseNpyImage(b: Uint8Array, where: ErrorLocation = {}): RawImage {
  const hit = last;
  if (hit !== null && sameHeader(b, hit.header)) {
    const start = hit.header.length;
    // Too short: the full parse below reports it, in its words.
    if (b.length >= start + hit.nbytes) {
      return { data: b.subarray(start, start + hit.nbytes), width: hit.width, height: hit.height, channels: hit.channels };
    }
  }
  // Said in the words the loader's corrupt-sample log has always used.
  if (!isNpy(b)) throw new Error('not a .npy file (bad magic)');
  const npy = decodeNpy(b, where);
  if (npy.dtype !== '|u1' && npy.dtype !== '<u1') throw new Error(`.npy dtype ${npy.dtype} is not uint8`);
  const [h, w, c = 1] = npy.shape;
  if (npy.shape.length < 2 || npy.shape.length > 3 || !h || !w || (c !== 1 && c !== 3)) {
    throw new Error(`.npy shape (${npy.shape.join(', ')}) is not H x W [x 1|3]`);
  }
  last = { header: Buffer.from(b.subarray(0, npy.dataOffset)), width: w, height: h, channels: c, nbytes: npy.data.length };
  return { data: npy.data, width: w, height: h, channels: c };
}
