// Deterministic generated images with learnable classes: the embedded default dataset, so the
// benchmarks and the main job need no download. Each class is a coloured grating with its own
// orientation, frequency and palette; each sample adds its own phase, jitter and noise, so an
// MLP has something real (but not trivial) to learn.
import { Rng } from '../../shared/random.ts';

export interface SyntheticSample {
  label: number;
  /** HWC uint8. */
  data: Uint8Array;
  width: number;
  height: number;
  channels: 3;
}

interface ClassStyle {
  angle: number;
  frequency: number;
  colourA: [number, number, number];
  colourB: [number, number, number];
}

// Each class has its own palette, drawn from a narrow range so that classes sit close together
// under heavy noise: the grating's orientation and frequency do not survive flips and crops,
// so colour statistics must carry the class.
function classStyle(seed: number, label: number): ClassStyle {
  const rng = new Rng(seed, 0x5c1a55, label);
  const colour = (): [number, number, number] => [70 + rng.below(116), 70 + rng.below(116), 70 + rng.below(116)];
  return {
    angle: rng.next() * Math.PI,
    frequency: 1 + rng.next() * 3,
    colourA: colour(),
    colourB: colour(),
  };
}

export function syntheticLabel(index: number, numClasses: number): number {
  return index % numClasses;
}

export function syntheticImage(seed: number, index: number, numClasses: number, width: number, height: number, out?: Uint8Array): SyntheticSample {
  const label = syntheticLabel(index, numClasses);
  const style = classStyle(seed, label);
  const rng = new Rng(seed, 0x5a3b1e, index);
  const angle = style.angle + (rng.next() - 0.5) * 0.3;
  const phase = rng.next() * 2 * Math.PI;
  const gain = 0.6 + rng.next() * 0.8;
  const noise = 120;
  const kx = (2 * Math.PI * style.frequency * Math.cos(angle)) / width;
  const ky = (2 * Math.PI * style.frequency * Math.sin(angle)) / height;
  const data = out ?? new Uint8Array(width * height * 3);
  const [ar, ag, ab] = style.colourA;
  const [br, bg, bb] = style.colourB;
  let p = 0;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const t = 0.5 + 0.5 * Math.sin(kx * x + ky * y + phase);
      // One uniform draw split three ways keeps the generator cheap per pixel.
      const u = rng.nextUint32();
      const n0 = ((u & 0x3ff) / 1023 - 0.5) * noise;
      const n1 = (((u >>> 10) & 0x3ff) / 1023 - 0.5) * noise;
      const n2 = (((u >>> 20) & 0x3ff) / 1023 - 0.5) * noise;
      data[p++] = clamp((ar + (br - ar) * t) * gain + n0);
      data[p++] = clamp((ag + (bg - ag) * t) * gain + n1);
      data[p++] = clamp((ab + (bb - ab) * t) * gain + n2);
    }
  }
  return { label, data, width, height, channels: 3 };
}

function clamp(v: number): number {
  return v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
}
