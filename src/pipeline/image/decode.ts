// One entry point from file bytes to RawImage for every format the sources may contain.
// Output convention follows PIL's Image.open(f).convert('RGB' | 'L'), what the paper's
// torchvision pipeline used, with one deliberate difference: EXIF orientation is applied.
import sharp from 'sharp';
import { decodeJpegSync } from './decode-jpeg.ts';
import { sniffFormat, type ImageFormat } from './formats.ts';
import { rgbToLuma } from './luma.ts';
import { ImageDecodeError, type RawImage } from './types.ts';

export { decodeJpegSync } from './decode-jpeg.ts';
export { sniffFormat, type ImageFormat } from './formats.ts';

// We run one decoder per worker thread ourselves; libvips' own thread pool would only compete
// with them, and its operation cache only holds memory for images we never see twice.
sharp.concurrency(1);
sharp.cache(false);

export interface DecodeOptions {
  channels: 1 | 3;
  /** Named in errors. */
  file?: string;
}

export async function decodeImage(bytes: Uint8Array, opts: DecodeOptions): Promise<RawImage> {
  const { channels, file } = opts;
  if (bytes.length === 0) throw new ImageDecodeError('empty file', file);
  const format = sniffFormat(bytes);
  if (format === 'unknown') throw new ImageDecodeError('not an image (unknown format)', file);
  if (format === 'jpeg') {
    const fast = decodeJpegSync(bytes, channels, file);
    if (fast !== null) return fast;
  }
  return decodeWithSharp(bytes, format, channels, file);
}

async function decodeWithSharp(bytes: Uint8Array, format: ImageFormat, channels: 1 | 3, file: string | undefined): Promise<RawImage> {
  let data: Buffer;
  let width: number;
  let height: number;
  let got: number;
  try {
    const result = await sharp(bytes, {
      // 'truncated' rejects cut-off files but, like PIL, tolerates libjpeg's harmless warnings
      // (e.g. extraneous bytes before a marker) that the default 'warning' would reject.
      failOn: 'truncated',
      // First frame only, for animated GIF/WebP and multi-page TIFF.
      pages: 1,
      page: 0,
    })
      .rotate() // auto-orient from EXIF
      // Alpha is dropped, not composited onto a background: PIL's convert('RGB') discards it too,
      // keeping the colour stored under transparent pixels.
      .removeAlpha()
      // Palette, grey, 16-bit and CMYK (through its ICC profile or libvips' default) all end up
      // as 8-bit sRGB; 16-bit samples are scaled (v >> 8), where PIL would clip 16-bit grey.
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    data = result.data;
    width = result.info.width;
    height = result.info.height;
    got = result.info.channels;
  } catch (err) {
    const message = err instanceof Error ? err.message.split('\n')[0] : String(err);
    const what = format === 'jpeg' ? 'truncated or corrupt JPEG' : `undecodable ${format.toUpperCase()}`;
    throw new ImageDecodeError(`${what}: ${message}`, file);
  }
  if (got !== 3 || data.length !== width * height * 3) {
    throw new ImageDecodeError(`unexpected decoder output: ${got} channels, ${data.length} bytes for ${width}x${height}`, file);
  }
  // Grey sources come back as three equal channels; luma of equal channels is that value
  // again, so one conversion serves colour and grey inputs alike.
  if (channels === 1) return { data: rgbToLuma(data, width * height), width, height, channels: 1 };
  return { data, width, height, channels: 3 };
}
