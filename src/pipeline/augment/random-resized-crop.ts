// The train transform's box: a pure function of (seed, epoch, sample index) and the image's size,
// so it can be computed in whichever worker happens to get the sample.
import { Rng } from '../../shared/random.ts';
import type { CropBox } from './crop-box.ts';
import { randomFlip } from './flip.ts';
import type { AugmentSettings } from './settings.ts';

/**
 * torchvision's RandomResizedCrop.get_params: ten tries at a random area and log-uniform aspect
 * ratio, integer box inside the image; else a centre crop clamped to the ratio range. The flip
 * is drawn first, from the same stream.
 */
export function randomResizedCrop(seed: number, epoch: number, index: number, width: number, height: number, a: AugmentSettings): CropBox {
  const rng = new Rng(seed, 0xa06, epoch, index);
  const flip = randomFlip(rng, a.flip);
  const area = width * height;
  const logLo = Math.log(a.ratio[0]);
  const logHi = Math.log(a.ratio[1]);
  for (let attempt = 0; attempt < 10; attempt++) {
    const target = area * (a.scale[0] + rng.next() * (a.scale[1] - a.scale[0]));
    const aspect = Math.exp(logLo + rng.next() * (logHi - logLo));
    const w = Math.round(Math.sqrt(target * aspect));
    const h = Math.round(Math.sqrt(target / aspect));
    if (w > 0 && h > 0 && w <= width && h <= height) {
      const y = rng.below(height - h + 1);
      const x = rng.below(width - w + 1);
      return { x, y, width: w, height: h, flip };
    }
  }
  const inRatio = width / height;
  let w = width;
  let h = height;
  if (inRatio < a.ratio[0]) h = Math.round(w / a.ratio[0]);
  else if (inRatio > a.ratio[1]) w = Math.round(h * a.ratio[1]);
  return { x: Math.floor((width - w) / 2), y: Math.floor((height - h) / 2), width: w, height: h, flip };
}
