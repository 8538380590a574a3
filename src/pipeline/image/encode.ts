// Re-encoding for shards stored as JPEG (the alternative to raw uint8 pixels).
import jpegTurbo from '@julusian/jpeg-turbo';
import { lumaToRgb, rgbToLuma } from './luma.ts';
import type { RawImage } from './types.ts';

// The binding sizes a worst-case output buffer per call and returns a slice of it; reusing one
// scratch buffer and copying out the exact bytes keeps many small encoded images from each
// pinning a buffer several times their size.
let scratch: Buffer = Buffer.alloc(0);

/**
 * JPEG at the given quality (1..100). Colour uses 4:2:0 chroma subsampling: it is libjpeg's and
 * PIL's default, so shards look like ordinary JPEGs, and it gives the smallest files; 1 channel
 * is written as a true greyscale JPEG.
 */
export function encodeJpeg(img: RawImage, quality: number): Uint8Array {
  const { width, height, channels } = img;
  if (!Number.isInteger(quality) || quality < 1 || quality > 100) throw new RangeError(`JPEG quality must be 1..100, got ${quality}`);
  if (img.data.length < width * height * channels) throw new RangeError(`image data holds ${img.data.length} bytes, expected ${width * height * channels}`);
  const subsampling = channels === 3 ? jpegTurbo.SAMP_420 : jpegTurbo.SAMP_GRAY;
  const need = jpegTurbo.bufferSize({ width, height, subsampling });
  if (scratch.length < need) scratch = Buffer.alloc(need);
  const raw = Buffer.from(img.data.buffer, img.data.byteOffset, width * height * channels);
  const encoded = jpegTurbo.compressSync(raw, scratch, {
    format: channels === 3 ? jpegTurbo.FORMAT_RGB : jpegTurbo.FORMAT_GRAY,
    width,
    height,
    subsampling,
    quality,
  });
  return new Uint8Array(encoded); // copies exactly encoded.length bytes out of the scratch
}

/** The same image with 1 or 3 channels: PIL-style luma, or grey replicated. */
export function toChannels(img: RawImage, channels: 1 | 3): RawImage {
  if (img.channels === channels) return img;
  const pixels = img.width * img.height;
  const data = channels === 1 ? rgbToLuma(img.data, pixels) : lumaToRgb(img.data, pixels);
  return { data, width: img.width, height: img.height, channels };
}
