// The fast path: libjpeg-turbo straight into an RGB or grey buffer, ~20 us for a 64x64 JPEG
// where sharp's per-call overhead alone is ~1 ms. It declines (returns null) rather than fails, so that the
// caller can hand the file to sharp, which either decodes it or says precisely what is wrong:
// the binding reports every failure as the useless "No error" (it frees the TurboJPEG handle
// before reading the message).
import jpegTurbo from '@julusian/jpeg-turbo';
import { tiffOrientation } from './exif.ts';
import { readJpegHeader } from './jpeg-header.ts';
import type { RawImage } from './types.ts';

// sharp's default limitInputPixels: larger images go to sharp, which refuses them with a clear
// message, instead of making this path allocate gigabytes for a decompression bomb.
const MAX_PIXELS = 0x3fff * 0x3fff;

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/**
 * Decodes a JPEG with libjpeg-turbo, or returns null when the fast path does not apply: not a
 * JPEG, no readable frame header, EXIF orientation other than 1, CMYK/YCCK, 12-bit, over 268M
 * pixels, or anything libjpeg-turbo rejects. That includes truncated files: this TurboJPEG build
 * reports libjpeg's "premature end of data" warning as a failure (even when only the EOI marker
 * is missing), so a partially grey-filled image never comes back from here; the test suite pins
 * that behaviour down, so a binding that starts tolerating truncation fails loudly.
 * `out`, when large enough, receives the pixels (the result's data is then a view of it).
 */
export function decodeJpegSync(bytes: Uint8Array, channels: 1 | 3, file?: string, out?: Uint8Array): RawImage | null {
  void file; // accepted for symmetry with decodeImage; the fast path never reports errors itself
  const header = readJpegHeader(bytes);
  if (header === null) return null;
  if (header.precision !== 8 || (header.components !== 1 && header.components !== 3)) return null;
  if (header.width === 0 || header.height === 0 || header.width * header.height > MAX_PIXELS) return null;
  if (header.exifStart >= 0 && tiffOrientation(bytes, header.exifStart, header.exifEnd) !== 1) return null;
  const size = header.width * header.height * channels;
  const format = channels === 3 ? jpegTurbo.FORMAT_RGB : jpegTurbo.FORMAT_GRAY;
  try {
    const result =
      out !== undefined && out.length >= size
        ? jpegTurbo.decompressSync(asBuffer(bytes), asBuffer(out), { format })
        : jpegTurbo.decompressSync(asBuffer(bytes), { format });
    if (result.width !== header.width || result.height !== header.height || result.data.length !== size) return null;
    return { data: result.data, width: result.width, height: result.height, channels };
  } catch {
    return null;
  }
}
