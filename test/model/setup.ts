// Backend choice for a test file: cpu by default (deterministic, no setup), or wasm with the
// trainer's kernel overrides, which is what training on this kind of machine runs.
import * as tf from '@tensorflow/tfjs';
import { selectBackend } from '../../src/train/backend.ts';

export async function useBackend(name: 'cpu' | 'wasm'): Promise<void> {
  await selectBackend(name);
  if (tf.getBackend() !== name) throw new Error(`test setup: wanted backend ${name}, got ${tf.getBackend()}`);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
