// The training augmentation's settings: one type for the loader and every command. A train
// transform is torchvision's RandomResizedCrop (area fraction `scale`, aspect ratio `ratio`,
// random-resized-crop.ts) and a horizontal flip of half the crops (flip.ts); the eval transform
// (center-crop.ts) takes no settings.

export interface AugmentSettings {
  /** Fraction of the image area a crop covers: 0 < lo <= hi <= 1. */
  scale: [number, number];
  /** Crop aspect ratio w/h: 0 < lo <= hi. */
  ratio: [number, number];
  /** Mirror half the crops (chosen per sample). */
  flip: boolean;
}

/** Pre-training (torchvision's RandomResizedCrop defaults, as the paper): the loader's default. */
export const PRETRAIN_AUGMENT: AugmentSettings = { scale: [0.08, 1], ratio: [3 / 4, 4 / 3], flip: true };

/** The paper's fine-tuning crops (also eval's test-time augmentation views). */
export const FINETUNE_AUGMENT: AugmentSettings = { scale: [0.4, 1], ratio: [1, 1], flip: true };

/** What is wrong with a `scale` range, or null. */
export function scaleProblem(lo: number, hi: number): string | null {
  return lo > 0 && lo <= hi && hi <= 1 ? null : 'need 0 < LO <= HI <= 1';
}

/** What is wrong with a `ratio` range, or null. */
export function ratioProblem(lo: number, hi: number): string | null {
  return lo > 0 && lo <= hi ? null : 'need 0 < LO <= HI';
}

export class AugmentSettingsError extends Error {
  override readonly name = 'AugmentSettingsError';
  constructor(
    readonly field: keyof AugmentSettings,
    message: string,
  ) {
    super(`augment.${field}: ${message}`);
  }
}

/** `s` itself when it is usable; AugmentSettingsError naming the field otherwise. */
export function checkAugment(s: AugmentSettings): AugmentSettings {
  for (const [field, problem] of [
    ['scale', scaleProblem],
    ['ratio', ratioProblem],
  ] as const) {
    const range = s[field];
    const found = Array.isArray(range) && range.length === 2 ? problem(range[0], range[1]) : 'need two numbers [LO, HI]';
    if (found) throw new AugmentSettingsError(field, `${found}, got ${JSON.stringify(range)}`);
  }
  if (typeof s.flip !== 'boolean') throw new AugmentSettingsError('flip', `need true or false, got ${JSON.stringify(s.flip)}`);
  return s;
}
