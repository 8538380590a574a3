// The loader's .npy fast path: uint8 H x W [x C] arrays only, header parsed without regex or
// JSON (the generic decoder in webdataset/codecs.ts costs several microseconds an image).
import type { RawImage } from '../image/types.ts';

export function parseNpyImage(b: Uint8Array): RawImage {
  if (b.length < 10 || b[0] !== 0x93 || b[1] !== 0x4e || b[2] !== 0x55 || b[3] !== 0x4d || b[4] !== 0x50 || b[5] !== 0x59) {
    throw new Error('not a .npy file (bad magic)');
  }
  const major = b[6]!;
  const headerLen = major === 1 ? b[8]! | (b[9]! << 8) : b[8]! | (b[9]! << 8) | (b[10]! << 16) | (b[11]! << 24);
  const start = major === 1 ? 10 : 12;
  const dataOffset = start + headerLen;
  if (dataOffset > b.length) throw new Error('truncated .npy header');
  const header = Buffer.from(b.buffer, b.byteOffset + start, headerLen).toString('latin1');
  if (!header.includes("'descr': '|u1'") && !header.includes("'descr': '<u1'")) throw new Error(`.npy dtype is not uint8: ${header.trim()}`);
  if (header.includes("'fortran_order': True")) throw new Error('.npy in Fortran order is not supported');
  const open = header.indexOf("'shape': (");
  const close = header.indexOf(')', open);
  if (open < 0 || close < 0) throw new Error(`.npy header has no shape: ${header.trim()}`);
  const dims = header.slice(open + 10, close).split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const [h, w, c = 1] = dims;
  if (dims.length < 2 || dims.length > 3 || !h || !w || (c !== 1 && c !== 3)) throw new Error(`.npy shape (${dims.join(', ')}) is not H x W [x 1|3]`);
  const size = h * w * c;
  if (dataOffset + size > b.length) throw new Error(`truncated .npy data: ${b.length - dataOffset} of ${size} bytes`);
  return { data: b.subarray(dataOffset, dataOffset + size), width: w, height: h, channels: c };
}
