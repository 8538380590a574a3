import sharp from 'sharp';
import t from 'tap';
import { decodeImage, decodeJpegSync, sniffFormat } from '../../../src/pipeline/image/decode.ts';
import { rgbToLuma } from '../../../src/pipeline/image/luma.ts';
import { ImageDecodeError, type RawImage } from '../../../src/pipeline/image/types.ts';
import { jpegOf, makePng, maxAbsDiff, meanAbsDiff, photoLike, randomImage, sharpOf, sharpRaw } from './fixtures/images.ts';

const photo = photoLike(200, 150);
const photoJpeg = await jpegOf(photo);

function px(img: RawImage, x: number, y: number): number[] {
  const p = (y * img.width + x) * img.channels;
  return Array.from(img.data.subarray(p, p + img.channels));
}

function channelsEqual(img: RawImage): boolean {
  for (let p = 0; p < img.data.length; p += 3) if (img.data[p] !== img.data[p + 1] || img.data[p] !== img.data[p + 2]) return false;
  return true;
}

t.test('sniffFormat reads magic bytes only', async (t) => {
  t.equal(sniffFormat(photoJpeg), 'jpeg');
  t.equal(sniffFormat(await sharpOf(photo).png().toBuffer()), 'png');
  t.equal(sniffFormat(await sharpOf(photo).webp().toBuffer()), 'webp');
  t.equal(sniffFormat(await sharpOf(photo).gif().toBuffer()), 'gif');
  t.equal(sniffFormat(await sharpOf(photo).tiff().toBuffer()), 'tiff');
  t.equal(sniffFormat(Buffer.from('MM\0*rest', 'latin1')), 'tiff', 'big-endian TIFF');
  t.equal(sniffFormat(Buffer.from('GIF87a', 'latin1')), 'gif');
  t.equal(sniffFormat(Buffer.from('RIFF\0\0\0\0WAVE', 'latin1')), 'unknown', 'RIFF but not WebP');
  t.equal(sniffFormat(Buffer.from('BM')), 'unknown');
  t.equal(sniffFormat(new Uint8Array([0xff, 0xd8])), 'unknown', 'too short');
  t.equal(sniffFormat(new Uint8Array(0)), 'unknown');
});

t.test('JPEG fast path', async (t) => {
  const fast = decodeJpegSync(photoJpeg, 3);
  if (fast === null) throw new Error('fast path declined a plain JPEG');
  const ref = await sharpRaw(photoJpeg);
  t.same([fast.width, fast.height, fast.channels, fast.data.length], [200, 150, 3, 200 * 150 * 3]);
  // libjpeg-turbo here uses the fast integer IDCT, libvips the accurate one: tiny differences.
  t.ok(meanAbsDiff(fast.data, ref.data) < 1.5, 'close to sharp on average');
  t.ok(maxAbsDiff(fast.data, ref.data) <= 12, 'and everywhere');
  t.ok(meanAbsDiff(fast.data, photo.data) < 4, 'close to the encoded pixels');
  const viaAsync = await decodeImage(photoJpeg, { channels: 3, file: 'a.jpg' });
  t.same(Array.from(viaAsync.data), Array.from(fast.data), 'decodeImage takes the fast path');

  const prog = await sharpOf(photo).jpeg({ quality: 90, progressive: true }).toBuffer();
  const p = decodeJpegSync(prog, 3);
  t.ok(p !== null && meanAbsDiff(p.data, ref.data) < 1.5, 'progressive JPEG');

  const out = new Uint8Array(200 * 150 * 3 + 100);
  const into = decodeJpegSync(photoJpeg, 3, 'a.jpg', out);
  t.equal(into?.data.buffer, out.buffer, 'decodes into a large enough buffer');
  t.same(Array.from(into?.data ?? []), Array.from(fast.data));
  t.ok(decodeJpegSync(photoJpeg, 3, 'a.jpg', new Uint8Array(16)), 'too small a buffer is ignored');
  t.equal(decodeJpegSync(await sharpOf(photo).png().toBuffer(), 3), null, 'not a JPEG');
});

t.test('JPEG channels', async (t) => {
  const rgb = decodeJpegSync(photoJpeg, 3);
  const grey = decodeJpegSync(photoJpeg, 1);
  if (rgb === null || grey === null) throw new Error('fast path declined');
  t.equal(grey.channels, 1);
  t.equal(grey.data.length, 200 * 150);
  // JPEG's Y is the same ITU-R 601 luma PIL uses; only chroma rounding separates the two.
  t.ok(meanAbsDiff(grey.data, rgbToLuma(rgb.data, 200 * 150)) < 0.5, 'luma of the colour decode');

  const greyJpeg = await sharpOf(photo).toColourspace('b-w').jpeg().toBuffer();
  const g3 = await decodeImage(greyJpeg, { channels: 3 });
  t.equal(g3.channels, 3);
  t.ok(channelsEqual(g3), 'grey JPEG -> three equal channels');
  const g1 = await decodeImage(greyJpeg, { channels: 1 });
  t.same(Array.from(g1.data), Array.from(g3.data.filter((_, i) => i % 3 === 0)));
});

t.test('lossless formats decode exactly', async (t) => {
  const img = randomImage(9, 7, 3, 31);
  const files: Array<[string, Buffer]> = [
    ['PNG', makePng({ width: 9, height: 7, colourType: 2, depth: 8, samples: img.data })],
    ['WebP', await sharpOf(img).webp({ lossless: true }).toBuffer()],
    ['TIFF', await sharpOf(img).tiff({ compression: 'lzw' }).toBuffer()],
  ];
  for (const [name, bytes] of files) {
    const d = await decodeImage(bytes, { channels: 3, file: `x.${name}` });
    t.same([d.width, d.height, d.channels], [9, 7, 3], `${name} geometry`);
    t.same(Array.from(d.data), Array.from(img.data), `${name} pixels`);
    const plain = await decodeImage(new Uint8Array(bytes), { channels: 3 });
    t.same(Array.from(plain.data), Array.from(img.data), `${name} from a plain Uint8Array`);
  }
  const viewJpeg = new Uint8Array(photoJpeg.length + 8);
  viewJpeg.set(photoJpeg, 8);
  const fromView = decodeJpegSync(viewJpeg.subarray(8), 3);
  t.same(Array.from(fromView?.data ?? []), Array.from(decodeJpegSync(photoJpeg, 3)?.data ?? [0]), 'JPEG from an offset view');
});

t.test('GIF: first frame only', async (t) => {
  const frame = (rgb: number[]): Buffer => Buffer.concat(Array.from({ length: 100 }, () => Buffer.from(rgb)));
  const gif = await sharp(Buffer.concat([frame([200, 30, 30]), frame([30, 30, 200])]), {
    raw: { width: 10, height: 20, channels: 3, pageHeight: 10 },
  })
    .gif()
    .toBuffer();
  t.equal((await sharp(gif).metadata()).pages, 2, 'fixture is animated');
  const d = await decodeImage(gif, { channels: 3 });
  t.same([d.width, d.height], [10, 10]);
  t.ok(maxAbsDiff(d.data, frame([200, 30, 30])) <= 2, 'red first frame');
});

t.test('PNG variants: palette, 16-bit, alpha, grey', async (t) => {
  const palette = [
    [255, 0, 0],
    [0, 128, 0],
    [10, 20, 250],
    [77, 77, 77],
  ];
  const idx = [0, 1, 2, 3, 3, 2, 1, 0];
  const pal = makePng({ width: 4, height: 2, colourType: 3, depth: 8, samples: idx, palette, transparency: [0] });
  const dp = await decodeImage(pal, { channels: 3 });
  t.same(
    Array.from(dp.data),
    idx.flatMap((i) => palette[i]),
    'palette (with a transparent entry) -> its RGB',
  );

  const s16 = [0x1234, 0x80ff, 0xffff, 0x00ff, 0x7f80, 0x0180];
  const d16 = await decodeImage(makePng({ width: 2, height: 1, colourType: 2, depth: 16, samples: s16 }), { channels: 3 });
  t.same(Array.from(d16.data), [0x12, 0x80, 0xff, 0x00, 0x7f, 0x01], '16-bit RGB keeps the high byte');
  const g16 = await decodeImage(makePng({ width: 3, height: 1, colourType: 0, depth: 16, samples: [0x0000, 0x8000, 0xffff] }), { channels: 1 });
  t.same(Array.from(g16.data), [0, 128, 255], '16-bit grey scaled, not clipped');

  // Alpha is dropped, not composited: what lies under transparent pixels survives.
  const rgba = [10, 200, 30, 0, 250, 5, 60, 128, 1, 2, 3, 255, 90, 91, 92, 0];
  const da = await decodeImage(makePng({ width: 2, height: 2, colourType: 6, depth: 8, samples: rgba }), { channels: 3 });
  t.same(Array.from(da.data), [10, 200, 30, 250, 5, 60, 1, 2, 3, 90, 91, 92], 'RGBA -> RGB');

  const greyValues = [0, 17, 128, 255, 3, 99];
  const dg = await decodeImage(makePng({ width: 3, height: 2, colourType: 0, depth: 8, samples: greyValues }), { channels: 3 });
  t.same(
    Array.from(dg.data),
    greyValues.flatMap((v) => [v, v, v]),
    'grey -> three equal channels',
  );
  const dg1 = await decodeImage(makePng({ width: 3, height: 2, colourType: 0, depth: 8, samples: greyValues }), { channels: 1 });
  t.same(Array.from(dg1.data), greyValues, 'grey stays exact at 1 channel');
  const ga = await decodeImage(makePng({ width: 2, height: 1, colourType: 4, depth: 8, samples: [40, 0, 220, 255] }), { channels: 3 });
  t.same(Array.from(ga.data), [40, 40, 40, 220, 220, 220], 'grey + alpha');
});

t.test('RGB -> 1 channel is PIL convert("L") luma', async (t) => {
  // PIL: L = (R*19595 + G*38470 + B*7471 + 0x8000) >> 16 (ITU-R 601 in 16-bit fixed point).
  const rgb = [255, 0, 0, 0, 255, 0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 10, 20, 30];
  const d = await decodeImage(makePng({ width: 6, height: 1, colourType: 2, depth: 8, samples: rgb }), { channels: 1 });
  t.same([d.channels, d.width], [1, 6]);
  t.same(Array.from(d.data), [76, 150, 29, 255, 0, 18]);
});

t.test('CMYK JPEG goes through sharp and comes out as plausible RGB', async (t) => {
  const blocks = randomImage(64, 32, 3);
  for (let y = 0; y < 32; y++) {
    for (let x = 0; x < 64; x++) {
      const colour = x < 32 ? [200, 40, 40] : [128, 128, 128];
      blocks.data.set(colour, (y * 64 + x) * 3);
    }
  }
  const cmyk = await sharpOf(blocks).toColourspace('cmyk').jpeg({ quality: 95 }).toBuffer();
  t.equal((await sharp(cmyk).metadata()).channels, 4, 'fixture is CMYK');
  t.equal(decodeJpegSync(cmyk, 3), null, 'fast path declines CMYK');
  const d = await decodeImage(cmyk, { channels: 3, file: 'cmyk.jpg' });
  t.same([d.width, d.height, d.channels], [64, 32, 3]);
  const red = px(d, 10, 10);
  const grey = px(d, 50, 10);
  t.ok(red[0] > 150 && red[1] < 90 && red[2] < 90, `red stays red: ${red}`);
  t.ok(Math.max(...grey) - Math.min(...grey) < 20 && Math.abs(grey[1] - 128) < 30, `grey stays grey: ${grey}`);
  t.ok(meanAbsDiff(d.data, blocks.data) < 25, 'close overall');
});

t.test('EXIF-rotated JPEG is auto-oriented', async (t) => {
  // 60x40, a red 12x8 block in the stored top-left corner, grey elsewhere.
  const img: RawImage = { data: new Uint8Array(60 * 40 * 3).fill(128), width: 60, height: 40, channels: 3 };
  for (let y = 0; y < 8; y++) for (let x = 0; x < 12; x++) img.data.set([230, 20, 20], (y * 60 + x) * 3);
  const isRed = (p: number[]): boolean => p[0] > 180 && p[1] < 80 && p[2] < 80;
  const isGrey = (p: number[]): boolean => Math.abs(p[0] - 128) < 20 && Math.abs(p[1] - 128) < 20;

  // 6: displayed after a 90 degree clockwise turn, so the stored top-left lands top-right.
  const six = await sharpOf(img).jpeg({ quality: 95 }).withMetadata({ orientation: 6 }).toBuffer();
  t.equal(decodeJpegSync(six, 3), null, 'fast path declines');
  const d6 = await decodeImage(six, { channels: 3 });
  t.same([d6.width, d6.height], [40, 60], 'width and height swapped');
  t.ok(isRed(px(d6, 36, 5)), 'red at the top right');
  t.ok(isGrey(px(d6, 3, 5)) && isGrey(px(d6, 36, 55)), 'grey at the other corners');

  // 3: turned 180 degrees, the red block ends bottom-right.
  const three = await sharpOf(img).jpeg({ quality: 95 }).withMetadata({ orientation: 3 }).toBuffer();
  const d3 = await decodeImage(three, { channels: 1 });
  t.same([d3.width, d3.height, d3.channels], [60, 40, 1]);
  t.ok(px(d3, 55, 36)[0] < 100 && Math.abs(px(d3, 3, 3)[0] - 128) < 20, 'dark-in-luma red block bottom right');
});

t.test('bad input -> ImageDecodeError naming the file', async (t) => {
  const png = await sharpOf(photo).png().toBuffer();
  const random = randomImage(64, 64, 1, 41).data;
  random[0] = 0;
  const jpegHead = Buffer.concat([photoJpeg.subarray(0, 200), Buffer.alloc(500, 0x5a)]);
  const cases: Array<[string, Uint8Array, RegExp]> = [
    ['empty.jpg', new Uint8Array(0), /^empty file$/],
    ['text.jpg', Buffer.from('this is not an image\n'), /^not an image \(unknown format\)$/],
    ['random.bin', random, /^not an image \(unknown format\)$/],
    ['half.jpg', photoJpeg.subarray(0, photoJpeg.length >> 1), /^truncated or corrupt JPEG: .+/],
    ['most.jpg', photoJpeg.subarray(0, photoJpeg.length - 100), /^truncated or corrupt JPEG: .+/],
    ['no-eoi.jpg', photoJpeg.subarray(0, photoJpeg.length - 2), /^truncated or corrupt JPEG: .+/],
    ['garbage.jpg', jpegHead, /^truncated or corrupt JPEG: .+/],
    ['magic.jpg', Buffer.from([0xff, 0xd8, 0xff]), /^truncated or corrupt JPEG: .+/],
    ['half.png', png.subarray(0, png.length >> 1), /^undecodable PNG: .+/],
    ['magic.png', Buffer.concat([png.subarray(0, 8), Buffer.alloc(100, 7)]), /^undecodable PNG: .+/],
    ['head.gif', Buffer.from('GIF89a', 'latin1'), /^undecodable GIF: .+/],
    ['riff.webp', Buffer.from('RIFF\x10\0\0\0WEBPVP8 junkjunk', 'latin1'), /^undecodable WEBP: .+/],
  ];
  for (const [file, bytes, reason] of cases) {
    try {
      await decodeImage(bytes, { channels: 3, file });
      t.fail(`${file} decoded`);
    } catch (err) {
      if (!(err instanceof ImageDecodeError)) {
        t.fail(`${file}: not an ImageDecodeError: ${String(err)}`);
        continue;
      }
      t.equal(err.file, file, `${file}: file`);
      t.match(err.reason, reason, `${file}: ${err.reason}`);
      t.equal(err.message, `${file}: ${err.reason}`);
    }
  }
  const anonymous = await decodeImage(new Uint8Array(0), { channels: 1 }).catch((e: unknown) => e);
  t.ok(anonymous instanceof ImageDecodeError && anonymous.message === 'empty file' && anonymous.file === undefined, 'without a file name');
  t.equal(decodeJpegSync(photoJpeg.subarray(0, photoJpeg.length - 2), 3), null, 'fast path declines a missing EOI');
});
