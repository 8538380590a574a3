// PyTorch's default initialisation, seeded: nn.Linear draws weight and bias from
// U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5) reduces to exactly that),
// nn.LayerNorm starts at weight 1, bias 0. Each tensor gets its own stream (seed, index), so
// changing one layer's size leaves the draws of the others alone.
import type { ParamEntry } from './layout.ts';
import { numel } from './layout.ts';
import { Rng } from '../shared/random.ts';

export function initParam(entry: ParamEntry, seed: number, index: number): Float32Array {
  const out = new Float32Array(numel(entry.shape));
  switch (entry.role) {
    case 'norm.weight':
      out.fill(1);
      return out;
    case 'norm.bias':
      return out;
    case 'linear.weight':
    case 'linear.bias': {
      const bound = entry.fanIn > 0 ? 1 / Math.sqrt(entry.fanIn) : 0;
      const rng = new Rng(seed, index);
      for (let i = 0; i < out.length; i++) out[i] = (2 * rng.next() - 1) * bound;
      return out;
    }
  }
}

/** Initial values of every parameter in `layout`, in PyTorch layout. */
export function initParams(layout: readonly ParamEntry[], seed: number): Map<string, Float32Array> {
  const out = new Map<string, Float32Array>();
  layout.forEach((e, i) => out.set(e.name, initParam(e, seed, i)));
  return out;
}
