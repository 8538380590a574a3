// The horizontal flip: decided per sample here, applied by the resampler, which folds it into
// its horizontal pass (the mirrored crop costs nothing extra).
import type { Rng } from '../../shared/random.ts';

/** Half the samples, when enabled. Draws from `rng` only when enabled (the crop's draws follow). */
export function randomFlip(rng: Rng, enabled: boolean): boolean {
  return enabled && rng.next() < 0.5;
}
