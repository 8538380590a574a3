// Model files that PyTorch can read: <dir>/model.safetensors with the reference state-dict keys
// and shapes, and <dir>/config.json with what the name alone does not say (resolution, channels,
// classes). Both written atomically.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArch } from './arch.ts';
import { atomicWrite, atomicWriteFile } from '../shared/atomic-write.ts';
import { CheckpointError } from './errors.ts';
import { Mlp, type ModelConfig } from './mlp.ts';
import { readSafetensorsFile, writeSafetensorsFile } from './safetensors.ts';

export const MODEL_FILE = 'model.safetensors';
export const CONFIG_FILE = 'config.json';

/** config.json: the reference's names for the model class and the data it expects. */
export interface ModelConfigFile {
  arch: string;
  /** "BottleneckMLP" or "MLP", the reference's --model values. */
  model: 'BottleneckMLP' | 'MLP';
  res: number;
  channels: number;
  num_classes: number;
  input_dim: number;
  /** Images enter flattened in channel, row, column order. */
  input_layout: 'CHW';
  format: 'safetensors';
  producer: 'scaling-mlps-ts';
}

export function configFile(config: ModelConfig): ModelConfigFile {
  const spec = parseArch(config.arch);
  return {
    arch: spec.name,
    model: spec.kind === 'bottleneck' ? 'BottleneckMLP' : 'MLP',
    res: config.res,
    channels: config.channels,
    num_classes: config.numClasses,
    input_dim: config.channels * config.res * config.res,
    input_layout: 'CHW',
    format: 'safetensors',
    producer: 'scaling-mlps-ts',
  };
}

export function readModelConfig(dir: string): ModelConfig {
  const path = join(dir, CONFIG_FILE);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new CheckpointError(path, `cannot read model config: ${(e as Error).message}`, { cause: e });
  }
  const c = raw as Partial<ModelConfigFile>;
  for (const k of ['res', 'channels', 'num_classes'] as const) {
    if (!Number.isInteger(c[k]) || (c[k] as number) < 1) throw new CheckpointError(path, `${k} must be a positive integer`);
  }
  if (typeof c.arch !== 'string') throw new CheckpointError(path, 'arch is missing');
  return { arch: c.arch, res: c.res!, channels: c.channels!, numClasses: c.num_classes! };
}

/** Writes model.safetensors then config.json into `dir` (created if needed). */
export function saveModel(dir: string, model: Mlp, metadata: Record<string, string> = {}): void {
  mkdirSync(dir, { recursive: true });
  const cfg = configFile(model.config);
  atomicWrite(join(dir, MODEL_FILE), (tmp) =>
    writeSafetensorsFile(tmp, model.stateDict(), { format: 'pt', arch: cfg.arch, model: cfg.model, ...metadata }),
  );
  atomicWriteFile(join(dir, CONFIG_FILE), `${JSON.stringify(cfg, null, 2)}\n`);
}

/** Builds the model from config.json and fills it from model.safetensors. */
export function loadModel(dir: string): Mlp {
  const config = readModelConfig(dir);
  const path = join(dir, MODEL_FILE);
  if (!existsSync(path)) throw new CheckpointError(path, 'weights file is missing');
  const { tensors } = readSafetensorsFile(path);
  const model = new Mlp(config);
  try {
    model.loadStateDict(tensors, path);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}
