// Container detection by magic bytes. File names lie (ImageNet famously ships a PNG and a few
// CMYK files named .JPEG), so the bytes decide which decoder runs.

export type ImageFormat = 'jpeg' | 'png' | 'webp' | 'gif' | 'tiff' | 'unknown';

function startsWith(bytes: Uint8Array, magic: readonly number[], at = 0): boolean {
  if (bytes.length < at + magic.length) return false;
  for (let i = 0; i < magic.length; i++) if (bytes[at + i] !== magic[i]) return false;
  return true;
}

const PNG = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const GIF87 = [0x47, 0x49, 0x46, 0x38, 0x37, 0x61]; // 'GIF87a'
const GIF89 = [0x47, 0x49, 0x46, 0x38, 0x39, 0x61]; // 'GIF89a'
const RIFF = [0x52, 0x49, 0x46, 0x46]; // 'RIFF'
const WEBP = [0x57, 0x45, 0x42, 0x50]; // 'WEBP' at offset 8
const TIFF_LE = [0x49, 0x49, 0x2a, 0x00]; // 'II*\0'
const TIFF_BE = [0x4d, 0x4d, 0x00, 0x2a]; // 'MM\0*'
const BIGTIFF_LE = [0x49, 0x49, 0x2b, 0x00];
const BIGTIFF_BE = [0x4d, 0x4d, 0x00, 0x2b];

export function sniffFormat(bytes: Uint8Array): ImageFormat {
  if (startsWith(bytes, [0xff, 0xd8, 0xff])) return 'jpeg';
  if (startsWith(bytes, PNG)) return 'png';
  if (startsWith(bytes, RIFF) && startsWith(bytes, WEBP, 8)) return 'webp';
  if (startsWith(bytes, GIF87) || startsWith(bytes, GIF89)) return 'gif';
  if (startsWith(bytes, TIFF_LE) || startsWith(bytes, TIFF_BE) || startsWith(bytes, BIGTIFF_LE) || startsWith(bytes, BIGTIFF_BE)) {
    return 'tiff';
  }
  return 'unknown';
}
