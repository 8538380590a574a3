// Model files that PyTorch can read: <dir>/model.safetensors with the reference state-dict keys
// and shapes, and <dir>/config.json with what the name alone does not say (resolution, channels,
// classes). Both written atomically.
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArch } from './arch.ts';
import { atomicWrite, atomicWriteFile } from '../shared/atomic-write.ts';
import { CheckpointError } from './errors.ts';
import { Mlp, type ModelConfig } from './mlp.ts';
import { checkNormalization, PreprocessingError, type NormalizeSource, type Preprocessing, type Provenance } from './preprocessing.ts';
import { readSafetensorsFile, writeSafetensorsFile } from './safetensors.ts';

export const MODEL_FILE = 'model.safetensors';
export const CONFIG_FILE = 'config.json';

/**
 * config.json's "preprocessing": everything a consumer in any language needs to prepare inputs.
 * x[c, i, j] = (pixel[c, i, j] - mean[c]) / std[c], pixels in 0..255, flattened C,H,W.
 */
export interface PreprocessingFile {
  mean: number[];
  std: number[];
  /** Where mean/std came from: the training data's statistics ("dataset"), ImageNet's, or given. */
  normalize: NormalizeSource;
  pixel_range: [0, 255];
  resolution: number;
  channels: number;
  input_layout: 'CHW';
  /** Evaluation: the centred square of the shorter side (x fraction), resized to resolution. */
  eval_crop: { kind: 'center'; fraction: number };
}

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
  preprocessing?: PreprocessingFile;
  classes?: string[];
  provenance?: Record<string, string | number>;
}

function provenanceFile(p: Provenance): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  const names: [keyof Provenance, string][] = [
    ['dataset', 'dataset'],
    ['command', 'command'],
    ['updates', 'updates'],
    ['samplesSeen', 'samples_seen'],
    ['computeFlops', 'compute_flops'],
    ['finetunedFrom', 'finetuned_from'],
    ['importedFrom', 'imported_from'],
  ];
  for (const [k, name] of names) if (p[k] !== undefined) out[name] = p[k]!;
  return out;
}

export function configFile(config: ModelConfig, provenance?: Provenance): ModelConfigFile {
  const spec = parseArch(config.arch);
  const pre = config.preprocessing;
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
    ...(pre
      ? {
          preprocessing: {
            mean: pre.normalization.mean,
            std: pre.normalization.std,
            normalize: pre.normalization.source,
            pixel_range: [0, 255],
            resolution: config.res,
            channels: config.channels,
            input_layout: 'CHW',
            eval_crop: { kind: pre.evalCrop.kind, fraction: pre.evalCrop.fraction },
          },
        }
      : {}),
    ...(config.classes ? { classes: config.classes } : {}),
    ...(provenance ? { provenance: provenanceFile(provenance) } : {}),
  };
}

function readPreprocessing(raw: unknown, channels: number, path: string): Preprocessing | undefined {
  if (raw === undefined) return undefined;
  const p = raw as Partial<PreprocessingFile>;
  const source: NormalizeSource = p.normalize === 'imagenet' || p.normalize === 'explicit' ? p.normalize : 'dataset';
  try {
    const normalization = checkNormalization({ mean: p.mean as number[], std: p.std as number[], source }, channels, 'preprocessing');
    const fraction = p.eval_crop?.fraction ?? 1;
    if (!(fraction > 0 && fraction <= 1)) throw new PreprocessingError(`preprocessing: eval_crop.fraction must be in (0, 1], got ${fraction}`);
    return { normalization, evalCrop: { kind: 'center', fraction } };
  } catch (e) {
    throw new CheckpointError(path, (e as Error).message);
  }
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
  const preprocessing = readPreprocessing(c.preprocessing, c.channels!, path);
  const classes = Array.isArray(c.classes) && c.classes.length === c.num_classes ? c.classes.map(String) : undefined;
  return {
    arch: c.arch,
    res: c.res!,
    channels: c.channels!,
    numClasses: c.num_classes!,
    ...(preprocessing ? { preprocessing } : {}),
    ...(classes ? { classes } : {}),
  };
}

/** Writes model.safetensors then config.json into `dir` (created if needed). */
export function saveModel(dir: string, model: Mlp, metadata: Record<string, string> = {}, provenance?: Provenance): void {
  mkdirSync(dir, { recursive: true });
  const cfg = configFile(model.config, provenance);
  atomicWrite(join(dir, MODEL_FILE), (tmp) => writeSafetensorsFile(tmp, model.stateDict(), { format: 'pt', arch: cfg.arch, model: cfg.model, ...metadata }));
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
