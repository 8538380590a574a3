// The epoch plan: which samples form batch k of epoch e on rank r of w. A pure function of
// (seed, epoch, rank, world, dataset size, batch size), so any process can compute any batch
// without coordination, a resumed run can jump straight to (epoch, step), and ranks never
// overlap.
import { permutation } from '../../shared/random.ts';

export type PlanMode = 'train' | 'eval';

export interface PlanConfig {
  numSamples: number;
  batchSize: number;
  seed: number;
  rank: number;
  world: number;
  mode: PlanMode;
}

export class PlanError extends Error {
  override name = 'PlanError';
}

export function checkPlan(c: PlanConfig): void {
  if (!Number.isInteger(c.world) || c.world < 1) throw new PlanError(`world size must be a positive integer, got ${c.world}`);
  if (!Number.isInteger(c.rank) || c.rank < 0 || c.rank >= c.world) throw new PlanError(`rank must be in [0, ${c.world}), got ${c.rank}`);
  if (!Number.isInteger(c.batchSize) || c.batchSize < 1) throw new PlanError(`batch size must be a positive integer, got ${c.batchSize}`);
  if (c.mode === 'train' && c.numSamples < c.batchSize * c.world) {
    throw new PlanError(`${c.numSamples} samples cannot fill one batch of ${c.batchSize} on each of ${c.world} ranks (train drops partial batches)`);
  }
}

/** Eval: rank r reads samples r, r + w, r + 2w, ... (every sample once across ranks). */
function evalCount(c: PlanConfig): number {
  return Math.max(0, Math.ceil((c.numSamples - c.rank) / c.world));
}

export function stepsPerEpoch(c: PlanConfig): number {
  if (c.mode === 'train') return Math.floor(c.numSamples / (c.batchSize * c.world));
  return Math.ceil(evalCount(c) / c.batchSize);
}

/** Rows in batch `step` (train: always batchSize; eval: the last one may be short). */
export function batchRows(c: PlanConfig, step: number): number {
  if (c.mode === 'train') return c.batchSize;
  return Math.max(0, Math.min(c.batchSize, evalCount(c) - step * c.batchSize));
}

let cached: { n: number; seed: number; epoch: number; perm: Uint32Array } | null = null;

/** The epoch's global shuffle, shared by every rank (the last one is kept: plans ask in order). */
export function epochPermutation(numSamples: number, seed: number, epoch: number): Uint32Array {
  if (cached && cached.n === numSamples && cached.seed === seed && cached.epoch === epoch) return cached.perm;
  const perm = permutation(numSamples, seed, 0xe90c4, epoch);
  cached = { n: numSamples, seed, epoch, perm };
  return perm;
}

/** Global sample indices of batch `step` of `epoch` on this rank. */
export function batchIndices(c: PlanConfig, epoch: number, step: number): Uint32Array {
  const steps = stepsPerEpoch(c);
  if (!Number.isInteger(step) || step < 0 || step >= steps) throw new PlanError(`step ${step} out of range: epoch has ${steps} steps`);
  if (c.mode === 'train') {
    const perm = epochPermutation(c.numSamples, c.seed, epoch);
    // Batches interleave ranks (step-major), so every rank's k-th batch comes from the same
    // stretch of the permutation and the dropped tail is the same for all.
    const start = (step * c.world + c.rank) * c.batchSize;
    return perm.slice(start, start + c.batchSize);
  }
  const rows = batchRows(c, step);
  const out = new Uint32Array(rows);
  for (let i = 0; i < rows; i++) out[i] = c.rank + c.world * (step * c.batchSize + i);
  return out;
}
