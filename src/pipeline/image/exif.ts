// EXIF orientation without an EXIF library: only IFD0 tag 0x0112 matters to us, and JPEGs from
// the wild carry every kind of broken APP1 segment, so each read is bounds-checked and any
// inconsistency means "no rotation" rather than an exception.
import { readJpegHeader } from './jpeg-header.ts';

const ORIENTATION_TAG = 0x0112;
const TYPE_SHORT = 3;
const TYPE_LONG = 4;

/**
 * Orientation (1..8) from a TIFF structure occupying bytes[start, end); 1 when absent or invalid.
 */
export function tiffOrientation(bytes: Uint8Array, start: number, end: number): number {
  end = Math.min(end, bytes.length);
  if (start < 0 || end - start < 8) return 1;
  const b0 = bytes[start];
  const b1 = bytes[start + 1];
  let le: boolean;
  if (b0 === 0x49 && b1 === 0x49)
    le = true; // 'II'
  else if (b0 === 0x4d && b1 === 0x4d)
    le = false; // 'MM'
  else return 1;
  const u16 = (off: number): number => (le ? bytes[start + off] | (bytes[start + off + 1] << 8) : (bytes[start + off] << 8) | bytes[start + off + 1]);
  const u32 = (off: number): number =>
    le
      ? (bytes[start + off] | (bytes[start + off + 1] << 8) | (bytes[start + off + 2] << 16)) + bytes[start + off + 3] * 0x1000000
      : bytes[start + off] * 0x1000000 + ((bytes[start + off + 1] << 16) | (bytes[start + off + 2] << 8) | bytes[start + off + 3]);
  const size = end - start;
  if (u16(2) !== 42) return 1;
  const ifd = u32(4);
  if (ifd < 8 || ifd + 2 > size) return 1;
  const count = u16(ifd);
  for (let i = 0; i < count; i++) {
    const entry = ifd + 2 + i * 12;
    if (entry + 12 > size) return 1;
    if (u16(entry) !== ORIENTATION_TAG) continue;
    const type = u16(entry + 2);
    // The value (count 1) sits left-aligned in the 4-byte value field, in the file's byte order.
    const value = type === TYPE_SHORT ? u16(entry + 8) : type === TYPE_LONG ? u32(entry + 8) : 0;
    return value >= 1 && value <= 8 ? value : 1;
  }
  return 1;
}

/** EXIF orientation of a JPEG: 1..8, 1 when absent, not a JPEG, or unreadable. Never throws. */
export function jpegExifOrientation(bytes: Uint8Array): number {
  const header = readJpegHeader(bytes);
  if (header === null || header.exifStart < 0) return 1;
  return tiffOrientation(bytes, header.exifStart, header.exifEnd);
}
