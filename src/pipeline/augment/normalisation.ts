// Per-channel normalisation, folded into the resampler's last pass for float32 frames. uint8
// frames carry mean and std instead, and their consumer computes the same float32 factors
// (src/train/normalize-batch.ts), so both frame types give the model the same values.

export interface Normalisation {
  /** out = pixel * scale[c] + bias[c] (pixel in 0..255), both float32. */
  scale: Float32Array;
  bias: Float32Array;
}

/** (pixel - mean) / std with mean and std in 0..255 units, as the paper does (ImageNet x 255). */
export function normalisation(mean: readonly number[], std: readonly number[]): Normalisation {
  const scale = new Float32Array(mean.length);
  const bias = new Float32Array(mean.length);
  for (let c = 0; c < mean.length; c++) {
    scale[c] = 1 / std[c]!;
    bias[c] = -mean[c]! / std[c]!;
  }
  return { scale, bias };
}
