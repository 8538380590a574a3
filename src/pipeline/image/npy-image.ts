// A stored .npy (uint8, H x W or H x W x C with C 1 or 3) as an image, without copying: what our
// raw shards hold, read by the loader and when re-sharding.
import { decodeNpy } from '../webdataset/codecs.ts';
import type { ErrorLocation } from '../webdataset/errors.ts';
import type { RawImage } from './types.ts';

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];

export function isNpy(b: Uint8Array): boolean {
  return MAGIC.every((m, i) => b[i] === m);
}

export function parseNpyImage(b: Uint8Array, where: ErrorLocation = {}): RawImage {
  // Said in the words the loader's corrupt-sample log has always used.
  if (!isNpy(b)) throw new Error('not a .npy file (bad magic)');
  const npy = decodeNpy(b, where);
  if (npy.dtype !== '|u1' && npy.dtype !== '<u1') throw new Error(`.npy dtype ${npy.dtype} is not uint8`);
  const [h, w, c = 1] = npy.shape;
  if (npy.shape.length < 2 || npy.shape.length > 3 || !h || !w || (c !== 1 && c !== 3)) {
    throw new Error(`.npy shape (${npy.shape.join(', ')}) is not H x W [x 1|3]`);
  }
  return { data: npy.data, width: w, height: h, channels: c };
}
