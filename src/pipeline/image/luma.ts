// Colour -> grey exactly as PIL's convert('L') does it (ITU-R 601-2 luma,
// L = R*299/1000 + G*587/1000 + B*114/1000), so that 1-channel data matches what a
// torchvision/PIL pipeline would have produced. PIL evaluates it in 16-bit fixed point with
// rounding; the three weights sum to exactly 65536, so grey pixels (R = G = B) map to themselves.

const WR = 19595;
const WG = 38470;
const WB = 7471;
const HALF = 0x8000;

/** Converts interleaved RGB to grey. `out` must hold at least pixels bytes. */
export function rgbToLuma(rgb: Uint8Array, pixels: number, out: Uint8Array = new Uint8Array(pixels)): Uint8Array {
  for (let i = 0, p = 0; i < pixels; i++, p += 3) {
    out[i] = (rgb[p] * WR + rgb[p + 1] * WG + rgb[p + 2] * WB + HALF) >>> 16;
  }
  return out;
}

/** Replicates grey into three equal channels (PIL's convert('RGB') from 'L'). */
export function lumaToRgb(grey: Uint8Array, pixels: number, out: Uint8Array = new Uint8Array(pixels * 3)): Uint8Array {
  for (let i = 0, p = 0; i < pixels; i++, p += 3) {
    const v = grey[i];
    out[p] = v;
    out[p + 1] = v;
    out[p + 2] = v;
  }
  return out;
}
