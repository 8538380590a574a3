import t from 'tap';
import { decodeJpegSync } from '../../../src/pipeline/image/decode.ts';
import { jpegExifOrientation, tiffOrientation } from '../../../src/pipeline/image/exif.ts';
import { readJpegHeader } from '../../../src/pipeline/image/jpeg-header.ts';
import { jpegOf, photoLike, rng, sharpOf } from './fixtures/images.ts';

const base = await jpegOf(photoLike(24, 16));

/** A TIFF structure with one IFD0 whose entries are (tag, type, value) with count 1. */
function tiff(le: boolean, entries: Array<[number, number, number]>, opts: { magic?: number; ifd?: number } = {}): Buffer {
  const ifd = opts.ifd ?? 8;
  const buf = Buffer.alloc(8 + 2 + entries.length * 12 + 4);
  buf.write(le ? 'II' : 'MM', 0, 'latin1');
  const u16 = (v: number, at: number): number => (le ? buf.writeUInt16LE(v, at) : buf.writeUInt16BE(v, at));
  const u32 = (v: number, at: number): number => (le ? buf.writeUInt32LE(v, at) : buf.writeUInt32BE(v, at));
  u16(opts.magic ?? 42, 2);
  u32(ifd, 4);
  u16(entries.length, 8);
  entries.forEach(([tag, type, value], i) => {
    const e = 10 + i * 12;
    u16(tag, e);
    u16(type, e + 2);
    u32(1, e + 4);
    if (type === 3) u16(value, e + 8);
    else u32(value, e + 8);
  });
  return buf;
}

/** The base JPEG with an APP1 segment inserted after SOI; `declared` overrides its length field. */
function withApp1(payload: Buffer, declared?: number): Buffer {
  const head = Buffer.alloc(4);
  head[0] = 0xff;
  head[1] = 0xe1;
  head.writeUInt16BE(declared ?? payload.length + 2, 2);
  return Buffer.concat([base.subarray(0, 2), head, payload, base.subarray(2)]);
}

const exif = (tiffBytes: Buffer): Buffer => Buffer.concat([Buffer.from('Exif\0\0', 'latin1'), tiffBytes]);

t.test('orientation written by libvips', async (t) => {
  t.equal(jpegExifOrientation(base), 1, 'no EXIF -> 1');
  for (const o of [1, 3, 6, 8]) {
    const jpg = await sharpOf(photoLike(24, 16)).jpeg().withMetadata({ orientation: o }).toBuffer();
    t.equal(jpegExifOrientation(jpg), o, `orientation ${o}`);
  }
});

t.test('hand-built APP1 segments, both byte orders', async (t) => {
  t.equal(jpegExifOrientation(withApp1(exif(tiff(true, [[0x0112, 3, 6]])))), 6, 'II, SHORT');
  t.equal(jpegExifOrientation(withApp1(exif(tiff(false, [[0x0112, 3, 8]])))), 8, 'MM, SHORT');
  t.equal(
    jpegExifOrientation(
      withApp1(
        exif(
          tiff(false, [
            [0x010f, 2, 0],
            [0x0110, 2, 0],
            [0x0112, 3, 3],
          ]),
        ),
      ),
    ),
    3,
    'after other tags',
  );
  t.equal(jpegExifOrientation(withApp1(exif(tiff(true, [[0x0112, 4, 5]])))), 5, 'LONG tolerated');
  // An XMP APP1 in front of the EXIF APP1 must not hide it.
  const xmp = Buffer.from('http://ns.adobe.com/xap/1.0/\0<x/>', 'latin1');
  const both = withApp1(xmp);
  const head = Buffer.from([0xff, 0xe1, 0, 0]);
  const ex = exif(tiff(true, [[0x0112, 3, 7]]));
  head.writeUInt16BE(ex.length + 2, 2);
  t.equal(jpegExifOrientation(Buffer.concat([both.subarray(0, 2), head, ex, both.subarray(2)])), 7, 'EXIF after XMP');
});

t.test('invalid or damaged EXIF means orientation 1, never an exception', async (t) => {
  t.equal(jpegExifOrientation(withApp1(exif(tiff(true, [[0x0112, 3, 9]])))), 1, 'value 9 out of range');
  t.equal(jpegExifOrientation(withApp1(exif(tiff(true, [[0x0112, 3, 0]])))), 1, 'value 0');
  t.equal(jpegExifOrientation(withApp1(exif(tiff(true, [[0x0112, 3, 6]], { magic: 43 })))), 1, 'bad TIFF magic');
  t.equal(jpegExifOrientation(withApp1(exif(tiff(true, [[0x0112, 3, 6]], { ifd: 4000 })))), 1, 'IFD offset past the segment');
  t.equal(jpegExifOrientation(withApp1(exif(tiff(true, [[0x0112, 3, 6]], { ifd: 2 })))), 1, 'IFD offset inside the header');
  const hugeCount = tiff(false, [[0x0112, 3, 6]]);
  hugeCount.writeUInt16BE(0xffff, 8);
  hugeCount.writeUInt16BE(0x0001, 10); // first entry no longer the orientation tag
  t.equal(jpegExifOrientation(withApp1(exif(hugeCount))), 1, 'entry count larger than the segment');
  t.equal(jpegExifOrientation(withApp1(Buffer.from('Exif\0\0XX*', 'latin1'))), 1, 'TIFF header cut short');
  t.equal(jpegExifOrientation(withApp1(exif(tiff(true, [[0x0112, 3, 6]])), 2000)), 1, 'APP1 length beyond the file');
  t.equal(jpegExifOrientation(withApp1(exif(tiff(true, [[0x0112, 3, 6]])), 1)), 1, 'APP1 length < 2');
  t.equal(jpegExifOrientation(withApp1(Buffer.concat([Buffer.from('Exif\0\0'), Buffer.alloc(20, 0xff)]))), 1, 'all 0xFF');
  t.equal(jpegExifOrientation(new Uint8Array(0)), 1, 'empty');
  t.equal(jpegExifOrientation(Buffer.from('not a jpeg')), 1, 'not a JPEG');
  t.equal(tiffOrientation(Buffer.alloc(4), 0, 100), 1, 'range beyond the buffer');
  t.equal(tiffOrientation(tiff(true, [[0x0112, 3, 6]]), 0, 30), 6, 'tiffOrientation itself');
});

t.test('every prefix of an EXIF JPEG and random garbage are safe', async (t) => {
  const rotated = await sharpOf(photoLike(24, 16)).jpeg().withMetadata({ orientation: 6 }).toBuffer();
  let bad = 0;
  for (let n = 0; n <= Math.min(rotated.length, 4000); n++) {
    const o = jpegExifOrientation(rotated.subarray(0, n));
    if (o !== 1 && o !== 6) bad++;
  }
  t.equal(bad, 0, 'prefixes give 1 or 6');
  const next = rng(5);
  let threw = 0;
  for (let n = 0; n < 2000; n++) {
    const junk = new Uint8Array(Math.floor(next() * 300));
    for (let i = 0; i < junk.length; i++) junk[i] = next() < 0.2 ? 0xff : Math.floor(next() * 256);
    junk.set([0xff, 0xd8, 0xff, 0xe1].slice(0, junk.length));
    try {
      const o = jpegExifOrientation(junk);
      if (!(o >= 1 && o <= 8)) threw++;
      readJpegHeader(junk);
    } catch {
      threw++;
    }
  }
  t.equal(threw, 0, '2000 random buffers');
});

t.test('the frame header', async (t) => {
  const h = readJpegHeader(base);
  t.ok(h);
  t.same([h?.width, h?.height, h?.components, h?.precision], [24, 16, 3, 8]);
  const grey = await sharpOf(photoLike(24, 16)).toColourspace('b-w').jpeg().toBuffer();
  t.equal(readJpegHeader(grey)?.components, 1);
  t.equal(readJpegHeader(base.subarray(0, 20)), null, 'cut before the frame header');
});

t.test('the fast path declines rotated JPEGs', async (t) => {
  t.ok(decodeJpegSync(base, 3));
  t.equal(decodeJpegSync(withApp1(exif(tiff(true, [[0x0112, 3, 6]]))), 3), null);
  t.ok(decodeJpegSync(withApp1(exif(tiff(true, [[0x0112, 3, 1]]))), 3), 'orientation 1 keeps the fast path');
});
