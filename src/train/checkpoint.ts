// Training checkpoints: everything needed to continue exactly where a run stopped.
//
//   <out>/checkpoints/step-000000120/model.safetensors   weights, reference state-dict names
//                                   config.json         model config (loadable on its own)
//                                   optimizer.safetensors  slots as "<slot>.<param name>"
//                                   trainer.json        position, RNG state, partial-epoch sums
//   <out>/checkpoints/latest.json   {"checkpoint": "step-000000120"}
//
// A checkpoint directory is filled under a temporary name and renamed into place, then
// latest.json is replaced atomically: a crash at any point leaves the previous checkpoint
// intact and pointed to. Older checkpoints beyond the newest KEEP are removed afterwards.
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { atomicWriteFile, fsyncDir } from '../shared/atomic-write.ts';
import { CheckpointError } from '../model/errors.ts';
import { CONFIG_FILE, configFile, MODEL_FILE, readModelConfig } from '../model/checkpoint.ts';
import type { Mlp, ModelConfig } from '../model/mlp.ts';
import type { RngState } from '../shared/random.ts';
import { readSafetensorsFile, writeSafetensorsFile, type NamedTensor } from '../model/safetensors.ts';
import type { Optimizer, OptimizerName } from './optim/index.ts';
import type { FinetuneMode } from './config.ts';

export const CHECKPOINTS_DIR = 'checkpoints';
export const LATEST_FILE = 'latest.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const TRAINER_FILE = 'trainer.json';
const KEEP = 2;

/** Sums over the part of an epoch already trained, so epoch metrics survive a resume. */
export interface EpochSums {
  lossSum: number;
  top1: number;
  top5: number;
  samples: number;
  waitMs: number;
  wallMs: number;
}

export interface TrainerState {
  version: 1;
  /** Next batch to train: epoch and batch index within it. */
  epoch: number;
  step: number;
  /** Optimizer updates done. */
  globalStep: number;
  samplesSeen: number;
  rng: RngState;
  optimizer: { name: OptimizerName; steps: number };
  epochSums: EpochSums;
  /** What must match for a resume to be exact. */
  run: {
    arch: string;
    batchSize: number;
    accum: number;
    seed: number;
    stepsPerEpoch: number;
    /** Fine-tuning runs: the mode, the body's lr multiplier and where the weights came from. */
    finetune?: { mode: FinetuneMode; bodyLrMult: number; from: string };
  };
  savedAt: string;
}

export interface LoadedCheckpoint {
  dir: string;
  state: TrainerState;
  model: { config: ModelConfig; tensors: Map<string, NamedTensor> };
  optimizer: Map<string, NamedTensor>;
}

function hostTensors(named: Map<string, tf.Tensor>): Map<string, NamedTensor> {
  const out = new Map<string, NamedTensor>();
  for (const [k, t] of named) out.set(k, { shape: [...t.shape], data: Float32Array.from(t.dataSync() as Float32Array) });
  return out;
}

export function checkpointName(globalStep: number): string {
  return `step-${String(globalStep).padStart(9, '0')}`;
}

/** Writes a checkpoint of the current state under <out>/checkpoints and points latest.json at it. */
export function saveTrainCheckpoint(out: string, model: Mlp, optimizer: Optimizer, state: TrainerState): string {
  const root = join(out, CHECKPOINTS_DIR);
  mkdirSync(root, { recursive: true });
  const name = checkpointName(state.globalStep);
  const final = join(root, name);
  const tmp = join(root, `.${name}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  try {
    const cfg = configFile(model.config);
    writeSafetensorsFile(join(tmp, MODEL_FILE), model.stateDict(), { format: 'pt', arch: cfg.arch, model: cfg.model });
    atomicWriteFile(join(tmp, CONFIG_FILE), `${JSON.stringify(cfg, null, 2)}\n`);
    writeSafetensorsFile(join(tmp, OPTIMIZER_FILE), hostTensors(optimizer.state()), { optimizer: optimizer.name });
    atomicWriteFile(join(tmp, TRAINER_FILE), `${JSON.stringify(state, null, 2)}\n`);
    fsyncDir(tmp);
    if (existsSync(final)) {
      // Same update count written again (e.g. Ctrl-C right after a periodic checkpoint): swap.
      const old = join(root, `.${name}.old-${process.pid}`);
      renameSync(final, old);
      renameSync(tmp, final);
      rmSync(old, { recursive: true, force: true });
    } else {
      renameSync(tmp, final);
    }
    fsyncDir(root);
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
  atomicWriteFile(join(root, LATEST_FILE), `${JSON.stringify({ checkpoint: name })}\n`);
  prune(root, name);
  return final;
}

function prune(root: string, newest: string): void {
  const all = readdirSync(root)
    .filter((n) => /^step-\d+$/.test(n))
    .sort();
  const keep = new Set(all.slice(-KEEP));
  keep.add(newest);
  for (const n of all) if (!keep.has(n)) rmSync(join(root, n), { recursive: true, force: true });
}

/** The checkpoint directory `path` designates: a checkpoint itself, or a run directory's latest. */
export function resolveCheckpoint(path: string): string | null {
  const p = resolve(path);
  if (existsSync(join(p, TRAINER_FILE))) return p;
  const latest = join(p, CHECKPOINTS_DIR, LATEST_FILE);
  if (!existsSync(latest)) return null;
  let name: unknown;
  try {
    name = (JSON.parse(readFileSync(latest, 'utf8')) as { checkpoint?: unknown }).checkpoint;
  } catch (e) {
    throw new CheckpointError(latest, `unreadable: ${(e as Error).message}`, { cause: e });
  }
  if (typeof name !== 'string' || !/^step-\d+$/.test(name)) throw new CheckpointError(latest, 'does not name a checkpoint');
  const dir = join(p, CHECKPOINTS_DIR, name);
  if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new CheckpointError(latest, `points at missing ${dir}`);
  return dir;
}

/** The run directory a --resume path belongs to: itself, or <run> for <run>/checkpoints/step-N. */
export function runDirFor(path: string): string {
  const p = resolve(path);
  if (existsSync(join(p, TRAINER_FILE)) && basename(dirname(p)) === CHECKPOINTS_DIR) return dirname(dirname(p));
  return path;
}

export function loadTrainCheckpoint(path: string): LoadedCheckpoint {
  const dir = resolveCheckpoint(path);
  if (!dir) throw new CheckpointError(path, `no checkpoint here (expected ${TRAINER_FILE} or ${CHECKPOINTS_DIR}/${LATEST_FILE})`);
  const trainerPath = join(dir, TRAINER_FILE);
  let state: TrainerState;
  try {
    state = JSON.parse(readFileSync(trainerPath, 'utf8')) as TrainerState;
  } catch (e) {
    throw new CheckpointError(trainerPath, `unreadable: ${(e as Error).message}`, { cause: e });
  }
  if (state.version !== 1) throw new CheckpointError(trainerPath, `unsupported version ${String(state.version)}`);
  return {
    dir,
    state,
    model: { config: readModelConfig(dir), tensors: readSafetensorsFile(join(dir, MODEL_FILE)).tensors },
    optimizer: readSafetensorsFile(join(dir, OPTIMIZER_FILE)).tensors,
  };
}
