// A bounds-checked walk over the marker segments in front of a JPEG's first scan. It tells the
// decoder, without decoding anything, whether the libjpeg-turbo fast path applies (8-bit,
// 1 or 3 components, no EXIF rotation) and how large the output buffer must be.

export interface JpegHeader {
  width: number;
  height: number;
  /** 1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK. */
  components: number;
  /** Bits per sample: 8 almost always, 12 for some medical/scientific files. */
  precision: number;
  /** Byte range of the TIFF structure inside the first APP1 'Exif\0\0' segment, if any. */
  exifStart: number;
  exifEnd: number;
}

const EXIF_ID = [0x45, 0x78, 0x69, 0x66, 0x00, 0x00]; // 'Exif\0\0'

export function isJpeg(bytes: Uint8Array): boolean {
  return bytes.length >= 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
}

function isSof(marker: number): boolean {
  // C0..CF are start-of-frame markers except DHT (C4), JPG (C8) and DAC (CC).
  return marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc;
}

/**
 * Returns null when the bytes are not a JPEG or no frame header is found before the first
 * scan. Never throws and never reads past the end: every length is checked against the buffer.
 */
export function readJpegHeader(bytes: Uint8Array): JpegHeader | null {
  if (!isJpeg(bytes)) return null;
  const n = bytes.length;
  let exifStart = -1;
  let exifEnd = -1;
  let pos = 2;
  while (pos + 1 < n) {
    if (bytes[pos] !== 0xff) return null; // lost sync: not a well-formed header
    let marker = bytes[pos + 1];
    // Any number of 0xFF fill bytes may precede a marker.
    while (marker === 0xff && pos + 2 < n) {
      pos++;
      marker = bytes[pos + 1];
    }
    pos += 2;
    if (marker === 0x01 || (marker >= 0xd0 && marker <= 0xd7)) continue; // standalone markers
    if (marker === 0xd9 || marker === 0xda) return null; // EOI or SOS before any frame header
    if (pos + 2 > n) return null;
    const len = (bytes[pos] << 8) | bytes[pos + 1];
    if (len < 2) return null;
    const dataStart = pos + 2;
    const segEnd = pos + len;
    if (segEnd > n) return null;
    if (isSof(marker)) {
      if (len < 8) return null;
      return {
        precision: bytes[dataStart],
        height: (bytes[dataStart + 1] << 8) | bytes[dataStart + 2],
        width: (bytes[dataStart + 3] << 8) | bytes[dataStart + 4],
        components: bytes[dataStart + 5],
        exifStart,
        exifEnd,
      };
    }
    if (marker === 0xe1 && exifStart < 0 && segEnd - dataStart >= EXIF_ID.length) {
      let match = true;
      for (let i = 0; i < EXIF_ID.length; i++) if (bytes[dataStart + i] !== EXIF_ID[i]) match = false;
      if (match) {
        exifStart = dataStart + EXIF_ID.length;
        exifEnd = segEnd;
      }
    }
    pos = segEnd;
  }
  return null;
}
