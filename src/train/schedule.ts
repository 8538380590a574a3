// Learning rate per optimizer update: optional linear warm-up from base/warmup to base, then
// constant ("none", the paper's pre-training setting) or a half cosine down to minLr at the last
// update. The reference steps its cosine once per epoch; per update is smoother and the same curve.

export type ScheduleName = 'none' | 'cosine';
export const SCHEDULE_NAMES: readonly ScheduleName[] = ['none', 'cosine'];

export interface ScheduleSpec {
  base: number;
  schedule: ScheduleName;
  /** Updates of linear warm-up (0 for none). */
  warmupSteps: number;
  /** Updates in the whole run (the cosine reaches minLr here). */
  totalSteps: number;
  minLr?: number;
}

/** The rate for update number `step` (0-based). */
export function learningRate(spec: ScheduleSpec, step: number): number {
  const { base, warmupSteps } = spec;
  if (warmupSteps > 0 && step < warmupSteps) return (base * (step + 1)) / warmupSteps;
  if (spec.schedule === 'none') return base;
  const min = spec.minLr ?? 0;
  const span = Math.max(1, spec.totalSteps - warmupSteps);
  const progress = Math.min(1, Math.max(0, (step - warmupSteps) / span));
  return min + (base - min) * 0.5 * (1 + Math.cos(Math.PI * progress));
}
