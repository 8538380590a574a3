import t from 'tap';
import { decodeImage } from '../../../src/pipeline/image/decode.ts';
import { encodeJpeg, toChannels } from '../../../src/pipeline/image/encode.ts';
import { readJpegHeader } from '../../../src/pipeline/image/jpeg-header.ts';
import type { RawImage } from '../../../src/pipeline/image/types.ts';
import { meanAbsDiff, photoLike } from './fixtures/images.ts';

/** Horizontal and vertical sampling factors of each component, from the SOF0 segment. */
function samplingFactors(jpg: Uint8Array): number[] {
  for (let i = 2; i + 1 < jpg.length; i++) {
    if (jpg[i] === 0xff && jpg[i + 1] === 0xc0) {
      const n = jpg[i + 9];
      return Array.from({ length: n }, (_, k) => jpg[i + 11 + k * 3]);
    }
  }
  return [];
}

t.test('RGB round trip', async (t) => {
  const img = photoLike(64, 64);
  const jpg = encodeJpeg(img, 90);
  t.same(Array.from(jpg.subarray(0, 3)), [0xff, 0xd8, 0xff]);
  t.same(Array.from(jpg.subarray(-2)), [0xff, 0xd9], 'complete file');
  t.equal(jpg.buffer.byteLength, jpg.length, 'exactly sized, not a view of a worst-case buffer');
  t.same(samplingFactors(jpg), [0x22, 0x11, 0x11], '4:2:0');
  const back = await decodeImage(jpg, { channels: 3 });
  t.same([back.width, back.height, back.channels], [64, 64, 3]);
  t.ok(meanAbsDiff(back.data, img.data) < 4, `mean abs error ${meanAbsDiff(back.data, img.data).toFixed(2)}`);
  t.ok(encodeJpeg(img, 30).length < encodeJpeg(img, 95).length, 'quality matters');
  // The scratch buffer is reused: earlier results must not change under later encodes.
  const again = encodeJpeg(photoLike(64, 64, 99), 90);
  t.not(Buffer.compare(Buffer.from(jpg), Buffer.from(again)), 0);
  t.same(Array.from(encodeJpeg(img, 90)), Array.from(jpg), 'deterministic and unaffected by reuse');
});

t.test('non-multiple-of-16 sizes and views into larger buffers', async (t) => {
  const img = photoLike(37, 23);
  const big = new Uint8Array(img.data.length + 64);
  big.set(img.data, 32);
  const view: RawImage = { ...img, data: big.subarray(32, 32 + img.data.length) };
  const back = await decodeImage(encodeJpeg(view, 95), { channels: 3 });
  t.same([back.width, back.height], [37, 23]);
  t.ok(meanAbsDiff(back.data, img.data) < 4);
});

t.test('grey stays one channel', async (t) => {
  const grey = toChannels(photoLike(48, 32), 1);
  const jpg = encodeJpeg(grey, 90);
  t.equal(readJpegHeader(jpg)?.components, 1, 'greyscale JPEG');
  const back = await decodeImage(jpg, { channels: 1 });
  t.equal(back.channels, 1);
  t.ok(meanAbsDiff(back.data, grey.data) < 4, `mean abs error ${meanAbsDiff(back.data, grey.data).toFixed(2)}`);
});

t.test('argument checks', async (t) => {
  const img = photoLike(8, 8);
  t.throws(() => encodeJpeg(img, 0), RangeError);
  t.throws(() => encodeJpeg(img, 101), RangeError);
  t.throws(() => encodeJpeg({ ...img, data: img.data.subarray(0, 10) }, 90), RangeError);
});

t.test('toChannels', async (t) => {
  const rgb: RawImage = { data: Uint8Array.from([255, 0, 0, 0, 255, 0, 0, 0, 255, 9, 9, 9]), width: 2, height: 2, channels: 3 };
  t.same(Array.from(toChannels(rgb, 1).data), [76, 150, 29, 9], 'PIL luma');
  t.equal(toChannels(rgb, 3), rgb, 'no-op returns the image');
  const grey: RawImage = { data: Uint8Array.from([5, 250]), width: 2, height: 1, channels: 1 };
  const g3 = toChannels(grey, 3);
  t.same([g3.channels, ...Array.from(g3.data)], [3, 5, 5, 5, 250, 250, 250]);
});
