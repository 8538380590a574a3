// What a transform hands the resampler: the source rectangle (fractional edges allowed; it may
// hang off the image, whose edges then replicate) and whether to mirror it. A plain value, so
// that the parameters of every sample can be computed anywhere from (seed, epoch, index).

export interface CropBox {
  x: number;
  y: number;
  width: number;
  height: number;
  flip: boolean;
}
