// Image and output shapes on which the two kernels are compared (float32 and uint8 targets).

export interface ResampleCase {
  w: number;
  h: number;
  c: number;
  res: number;
  /** Crops to try. */
  n: number;
}

export const RESAMPLE_CASES: readonly ResampleCase[] = [
  { w: 64, h: 64, c: 3, res: 64, n: 150 },
  { w: 64, h: 48, c: 3, res: 64, n: 150 },
  { w: 48, h: 64, c: 3, res: 64, n: 60 },
  { w: 32, h: 32, c: 3, res: 64, n: 40 }, // stored smaller than res: enlarged by the crop
  { w: 28, h: 28, c: 1, res: 28, n: 120 },
  { w: 500, h: 375, c: 3, res: 64, n: 25 },
  { w: 500, h: 375, c: 1, res: 64, n: 25 },
  { w: 64, h: 48, c: 3, res: 32, n: 60 }, // shrinking by ~2: area tables that still fit a window
  { w: 37, h: 23, c: 3, res: 30, n: 60 }, // res not a multiple of 4
  { w: 9, h: 7, c: 4, res: 9, n: 40 },
  { w: 20, h: 16, c: 2, res: 6, n: 40 },
];
