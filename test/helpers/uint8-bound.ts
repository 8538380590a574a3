// How far a uint8 frame's pixel may be from the float32 frame's unrounded value of the same crop,
// in pixel steps (README: uint8 frames). Half a step for the final rounding; the uint8 kernel's
// fixed point adds 1/256 for rounding its horizontal result to Q7 and, per axis, (taps - 1) *
// 255/32768 for Q14 weights: cumulative rounding moves each cumulative weight by at most
// 0.5/16384, which moves a sum of `taps` pixels by at most (taps - 1) * 255 * 0.5/16384 (summation
// by parts over neighbouring differences of at most 255). `slack` covers float32 normalising.
export function uint8StepBound(tapsX: number, tapsY: number, slack = 1e-3): number {
  return 0.5 + 1 / 256 + ((tapsX - 1 + tapsY - 1) * 255) / 32768 + slack;
}
