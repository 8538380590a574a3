// Where fine-tuning and evaluation take their weights from. --checkpoint accepts
//   - a model directory: model.safetensors + config.json (what train writes at the end of a run,
//     or an imported PyTorch model);
//   - a run's --out directory without a final model: its latest checkpoint
//     (checkpoints/latest.json), e.g. a run stopped by Ctrl-C;
//   - one checkpoint directory (checkpoints/step-N);
//   - a .safetensors file with config.json beside it.
// A run directory holding both a final model and checkpoints gives the final model.
import { existsSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { CONFIG_FILE, MODEL_FILE, readModelConfig } from '../model/checkpoint.ts';
import { CheckpointError } from '../model/errors.ts';
import type { HostTensor, ModelConfig } from '../model/mlp.ts';
import { readSafetensorsFile } from '../model/safetensors.ts';
import { CHECKPOINTS_DIR, LATEST_FILE, resolveCheckpoint } from './checkpoint.ts';

export interface PretrainedRef {
  /** The path as given. */
  path: string;
  /** The weights file that will be read. */
  weights: string;
  config: ModelConfig;
}

export interface Pretrained extends PretrainedRef {
  tensors: Map<string, HostTensor>;
}

const EXPECTED = `expected a model directory (${MODEL_FILE} + ${CONFIG_FILE}), a run's --out (${CHECKPOINTS_DIR}/${LATEST_FILE}), a checkpoint directory, or a .safetensors file with ${CONFIG_FILE} beside it`;

/** Finds the weights and reads config.json; the tensors are not read. */
export function resolvePretrained(path: string): PretrainedRef {
  if (!existsSync(path)) throw new CheckpointError(path, `no such file or directory (${EXPECTED})`);
  let weights: string;
  if (statSync(path).isDirectory()) {
    if (existsSync(join(path, MODEL_FILE))) {
      weights = join(path, MODEL_FILE);
    } else {
      const ck = resolveCheckpoint(path);
      if (!ck) throw new CheckpointError(path, `no model here (${EXPECTED})`);
      weights = join(ck, MODEL_FILE);
      if (!existsSync(weights)) throw new CheckpointError(ck, `${MODEL_FILE} is missing`);
    }
  } else {
    if (!basename(path).endsWith('.safetensors')) throw new CheckpointError(path, `not a .safetensors file (${EXPECTED})`);
    weights = path;
  }
  const dir = dirname(weights);
  if (!existsSync(join(dir, CONFIG_FILE)))
    throw new CheckpointError(weights, `no ${CONFIG_FILE} beside it: the model's resolution, channels and classes are unknown`);
  return { path, weights, config: readModelConfig(dir) };
}

/** resolvePretrained plus the tensors, in PyTorch layout. */
export function loadPretrained(path: string): Pretrained {
  const ref = resolvePretrained(path);
  return { ...ref, tensors: readSafetensorsFile(ref.weights).tensors };
}
