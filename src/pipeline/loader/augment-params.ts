// Per-sample augmentation parameters: a pure function of (seed, epoch, sample index) and the
// image's size, so they can be computed in whichever worker happens to get the sample.
import { Rng } from '../../shared/random.ts';

export interface CropBox {
  x: number;
  y: number;
  width: number;
  height: number;
  flip: boolean;
}

export interface TrainAugment {
  /** Fraction of the image area a crop covers (torchvision default (0.08, 1)). */
  scale: [number, number];
  /** Crop aspect ratio w/h (default (3/4, 4/3)). */
  ratio: [number, number];
  flip: boolean;
}

export const DEFAULT_AUGMENT: TrainAugment = { scale: [0.08, 1], ratio: [3 / 4, 4 / 3], flip: true };

/**
 * torchvision's RandomResizedCrop.get_params: ten tries at a random area and log-uniform aspect
 * ratio, integer box inside the image; else a centre crop clamped to the ratio range.
 */
export function randomResizedCrop(seed: number, epoch: number, index: number, width: number, height: number, a: TrainAugment): CropBox {
  const rng = new Rng(seed, 0xa06, epoch, index);
  const flip = a.flip && rng.next() < 0.5;
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

/**
 * Eval: the centred square of side `fraction` x the shorter side (fractional position allowed),
 * resized to res x res. Images stored smaller than res (the paper kept the longer side at 64)
 * are upscaled, never padded.
 */
export function centerCrop(width: number, height: number, fraction = 1): CropBox {
  const side = Math.min(width, height) * fraction;
  return { x: (width - side) / 2, y: (height - side) / 2, width: side, height: side, flip: false };
}
