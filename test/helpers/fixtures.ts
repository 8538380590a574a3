// Small generated inputs for source tests.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { gzipSync } from 'node:zlib';
import sharp from 'sharp';
import { encodeHeader, paddedSize } from '../../src/pipeline/webdataset/tar-header.ts';
import { archiveEnd } from '../../src/pipeline/webdataset/tar-writer.ts';

/** A solid-colour image with a distinct top-left pixel, encoded in the given format. */
export async function colourImage(
  width: number,
  height: number,
  rgb: [number, number, number],
  format: 'jpeg' | 'png' | 'webp' | 'gif' | 'tiff',
): Promise<Buffer> {
  const img = sharp({ create: { width, height, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } });
  switch (format) {
    case 'jpeg':
      return img.jpeg({ quality: 95 }).toBuffer();
    case 'png':
      return img.png().toBuffer();
    case 'webp':
      return img.webp({ lossless: true }).toBuffer();
    case 'gif':
      return img.gif().toBuffer();
    case 'tiff':
      return img.tiff().toBuffer();
  }
}

export function writeFile(path: string, data: Uint8Array | string): void {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, data);
}

/** An idx file: big-endian dims after the 0x08 (uint8) magic. */
export function idxBytes(dims: number[], data: Uint8Array, gzip = false): Buffer {
  const header = Buffer.alloc(4 + 4 * dims.length);
  header[2] = 0x08;
  header[3] = dims.length;
  dims.forEach((d, i) => header.writeUInt32BE(d, 4 + 4 * i));
  const bytes = Buffer.concat([header, data]);
  return gzip ? gzipSync(bytes) : bytes;
}

/** A plain tar of arbitrary member names (the sample writer refuses some, e.g. upper-case extensions). */
export function rawTar(entries: { name: string; data: Uint8Array; typeflag?: string; linkname?: string }[]): Buffer {
  const parts: Uint8Array[] = [];
  let size = 0;
  for (const e of entries) {
    const header = encodeHeader({
      name: e.name,
      size: e.data.length,
      ...(e.typeflag ? { typeflag: e.typeflag } : {}),
      ...(e.linkname ? { linkname: e.linkname } : {}),
    });
    const body = Buffer.alloc(paddedSize(e.data.length));
    body.set(e.data);
    parts.push(header, body);
    size += header.length + body.length;
  }
  parts.push(archiveEnd(size));
  return Buffer.concat(parts);
}
