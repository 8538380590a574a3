// Fine-tuning's head swap, as the reference repository's (gregorbachmann/scaling_mlps)
// finetune.py does it: every pre-trained tensor except linear_out is loaded, and linear_out
// becomes a fresh Linear(width -> new classes) with PyTorch's default init (U(-1/sqrt(width),
// 1/sqrt(width)) for weight and bias), seeded.
//
// The head is drawn from headSeed(seed), not from `seed` itself: a model pre-trained here with
// the same seed and class count started from exactly the head `new Mlp(config, seed)` draws, and
// its body co-adapted to that head, so reusing it would not be a fresh head (in PyTorch the new
// Linear likewise comes from a later state of the global generator than the model's init).
import { parseArch } from './arch.ts';
import { initParam } from './init.ts';
import { paramLayout, type ParamEntry } from './layout.ts';
import type { ModelConfig } from './mlp.ts';
import { Mlp, type HostTensor } from './mlp.ts';
import { seedHash } from '../shared/random.ts';

export const HEAD = 'linear_out';
export const HEAD_PARAMS: ReadonlySet<string> = new Set([`${HEAD}.weight`, `${HEAD}.bias`]);

export function isHeadParam(name: string): boolean {
  return HEAD_PARAMS.has(name);
}

/** The init seed of a fine-tuning head (a stream apart from the model init's). */
export function headSeed(seed: number): number {
  return seedHash(seed, 0x48454144); // "HEAD"
}

/** The new head's initial tensors in PyTorch layout ([classes, width] weight, [classes] bias). */
export function newHeadParams(config: ModelConfig, numClasses: number, seed: number): Map<string, HostTensor> {
  const layout = paramLayout(parseArch(config.arch), { ...config, numClasses });
  const out = new Map<string, HostTensor>();
  layout.forEach((e: ParamEntry, i) => {
    if (isHeadParam(e.name)) out.set(e.name, { shape: [...e.shape], data: initParam(e, headSeed(seed), i) });
  });
  return out;
}

/**
 * A model with `config`'s body, filled from `tensors` (a state dict of the pre-trained model, any
 * head), and a new head for `numClasses` drawn from headSeed(seed): newHeadParams's values.
 */
export function withNewHead(config: ModelConfig, tensors: ReadonlyMap<string, HostTensor>, numClasses: number, seed: number, where = 'checkpoint'): Mlp {
  const model = new Mlp({ ...config, numClasses }, headSeed(seed));
  try {
    model.loadStateDict(tensors, where, { skip: HEAD_PARAMS });
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}
