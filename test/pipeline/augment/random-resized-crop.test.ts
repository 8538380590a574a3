import t from 'tap';
import { centerCrop } from '../../../src/pipeline/augment/center-crop.ts';
import { randomResizedCrop } from '../../../src/pipeline/augment/random-resized-crop.ts';
import { PRETRAIN_AUGMENT } from '../../../src/pipeline/augment/settings.ts';

t.test('random resized crops stay inside the image, within the scale and ratio ranges', async (t) => {
  let flips = 0;
  for (let i = 0; i < 2000; i++) {
    const b = randomResizedCrop(1, 0, i, 64, 48, PRETRAIN_AUGMENT);
    if (b.flip) flips++;
    if (!(b.x >= 0 && b.y >= 0 && b.x + b.width <= 64 && b.y + b.height <= 48 && Number.isInteger(b.x) && Number.isInteger(b.width))) {
      t.fail(`box out of bounds: ${JSON.stringify(b)}`);
      return;
    }
    const area = (b.width * b.height) / (64 * 48);
    // Rounding to whole pixels moves area and ratio a little past the nominal ranges.
    if (area < 0.06 || area > 1 || b.width / b.height < 0.6 || b.width / b.height > 1.6) t.fail(`box off range: ${JSON.stringify(b)}`);
  }
  t.ok(flips > 900 && flips < 1100, `about half flipped (${flips}/2000)`);
});

t.test('deterministic in (seed, epoch, index); differs when any changes', async (t) => {
  const a = randomResizedCrop(1, 2, 3, 64, 64, PRETRAIN_AUGMENT);
  t.same(randomResizedCrop(1, 2, 3, 64, 64, PRETRAIN_AUGMENT), a);
  const others = [
    randomResizedCrop(2, 2, 3, 64, 64, PRETRAIN_AUGMENT),
    randomResizedCrop(1, 3, 3, 64, 64, PRETRAIN_AUGMENT),
    randomResizedCrop(1, 2, 4, 64, 64, PRETRAIN_AUGMENT),
  ];
  for (const o of others) t.notSame(o, a);
});

t.test('fallback when no try fits: centre crop clamped to the ratio range (hand-computed)', async (t) => {
  // 100x10 is far wider than 4/3, scale (2, 3) can never fit: w = round(10 * 4/3) = 13, h = 10,
  // x = floor((100 - 13) / 2) = 43, y = 0.
  const b = randomResizedCrop(0, 0, 0, 100, 10, { scale: [2, 3], ratio: [3 / 4, 4 / 3], flip: false });
  t.same(b, { x: 43, y: 0, width: 13, height: 10, flip: false });
});

t.test('eval centre crop is the centred square of the shorter side', async (t) => {
  t.same(centerCrop(64, 48), { x: 8, y: 0, width: 48, height: 48, flip: false });
  t.same(centerCrop(28, 28, 0.5), { x: 7, y: 7, width: 14, height: 14, flip: false });
});
