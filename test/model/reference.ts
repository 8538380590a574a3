// An independent float64 implementation of the paper's MLPs, written straight from the PyTorch
// definitions (state-dict layout, Linear weight [out, in]), for checking the tfjs model's
// forward pass and, through finite differences, its gradients.
import type { HostTensor } from '../../src/model/mlp.ts';

/** erf to ~1e-13: Maclaurin series near 0, Lentz continued fraction for erfc further out. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 2.5) {
    let term = x;
    let sum = x;
    for (let n = 1; n < 200; n++) {
      term *= (-x * x) / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    return (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc(x) = exp(-x^2)/sqrt(pi) * 1/(x + 1/2/(x + 1/(x + 3/2/(x + ...))))
  let f = ax;
  let c = ax;
  let d = 0;
  for (let k = 1; k < 300; k++) {
    const a = k / 2;
    d = ax + a * d;
    d = 1 / d;
    c = ax + a / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  const erfc = Math.exp(-ax * ax) / Math.sqrt(Math.PI) / f;
  return x > 0 ? 1 - erfc : erfc - 1;
}

export const geluRef = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));

type Mat = Float64Array[]; // rows

function linear(x: Mat, w: HostTensor, b: HostTensor): Mat {
  const [out, inp] = w.shape as [number, number];
  return x.map((row) => {
    const y = new Float64Array(out);
    for (let o = 0; o < out; o++) {
      let s = b.data[o]!;
      for (let i = 0; i < inp; i++) s += w.data[o * inp + i]! * row[i]!;
      y[o] = s;
    }
    return y;
  });
}

function layerNorm(x: Mat, w: HostTensor, b: HostTensor, eps = 1e-5): Mat {
  return x.map((row) => {
    const n = row.length;
    const mean = row.reduce((s, v) => s + v, 0) / n;
    const variance = row.reduce((s, v) => s + (v - mean) ** 2, 0) / n;
    const r = 1 / Math.sqrt(variance + eps);
    return row.map((v, i) => (v - mean) * r * w.data[i]! + b.data[i]!);
  });
}

const gelu = (x: Mat): Mat => x.map((row) => row.map(geluRef));
const add = (a: Mat, b: Mat): Mat => a.map((row, i) => row.map((v, j) => v + b[i]![j]!));

export interface RefModel {
  kind: 'bottleneck' | 'standard';
  depth: number;
  state: Map<string, HostTensor>;
}

export function refForward(m: RefModel, images: Float64Array[] | Float32Array[]): Mat {
  const p = (k: string): HostTensor => {
    const t = m.state.get(k);
    if (!t) throw new Error(`reference: no ${k}`);
    return t;
  };
  let h = linear(
    images.map((r) => Float64Array.from(r)),
    p('linear_in.weight'),
    p('linear_in.bias'),
  );
  if (m.kind === 'bottleneck') {
    for (let i = 0; i < m.depth; i++) {
      const z = layerNorm(h, p(`layernorms.${i}.weight`), p(`layernorms.${i}.bias`));
      const u = gelu(linear(z, p(`blocks.${i}.block.0.weight`), p(`blocks.${i}.block.0.bias`)));
      h = add(h, linear(u, p(`blocks.${i}.block.2.weight`), p(`blocks.${i}.block.2.bias`)));
    }
  } else {
    for (let i = 0; i < m.depth - 1; i++) {
      h = linear(gelu(layerNorm(h, p(`layernorms.${i}.weight`), p(`layernorms.${i}.bias`))), p(`layers.${i}.weight`), p(`layers.${i}.bias`));
    }
  }
  return linear(h, p('linear_out.weight'), p('linear_out.bias'));
}

/** PyTorch's CrossEntropyLoss(label_smoothing=e), mean over the batch, optionally MixUp-combined. */
export function refLoss(logits: Mat, labels: ArrayLike<number>, smoothing: number, mix?: { lambda: number; partner: ArrayLike<number> }): number {
  const C = logits[0]!.length;
  const ce = (row: Float64Array, y: number): number => {
    const max = Math.max(...row);
    const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
    const logp = Array.from(row, (v) => v - lse);
    const mean = logp.reduce((s, v) => s + v, 0) / C;
    return -(1 - smoothing) * logp[y]! - smoothing * mean;
  };
  let total = 0;
  logits.forEach((row, i) => {
    const y = labels[i]!;
    total += mix ? mix.lambda * ce(row, y) + (1 - mix.lambda) * ce(row, labels[mix.partner[i]!]!) : ce(row, y);
  });
  return total / logits.length;
}
