// The eval transform's box.
import type { CropBox } from './crop-box.ts';

/**
 * The centred square of side `fraction` x the shorter side (fractional position allowed),
 * resized to res x res by the resampler. Images stored smaller than res (the paper kept the
 * longer side at 64) are upscaled, never padded.
 */
export function centerCrop(width: number, height: number, fraction = 1): CropBox {
  const side = Math.min(width, height) * fraction;
  return { x: (width - side) / 2, y: (height - side) / 2, width: side, height: side, flip: false };
}
