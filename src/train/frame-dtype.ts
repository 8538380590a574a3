// Which batch frames the loader writes for a trainer: uint8 pixels normalised on the device, or
// float32 values normalised by the workers. uint8 is the default where the batch has to cross to
// a GPU (a quarter of the bytes to write in the workers and to hold in the ring); on the CPU
// backends the trainer is thousands of times slower than the loader, so float32 stays their
// default (measured: README, "uint8 frames").
import * as tf from '@tensorflow/tfjs';
import type { FrameDtype } from '../shared/data-feed.ts';

export type FrameDtypeChoice = 'auto' | FrameDtype;
export const FRAME_DTYPE_CHOICES: readonly FrameDtypeChoice[] = ['auto', 'float32', 'uint8'];

/** Backends whose devices are GPUs, by the names --backend uses (and tfjs's for webgl). */
const GPU_BACKENDS: ReadonlySet<string> = new Set(['webgpu', 'tfjs-node-gpu', 'webgl']);

/** The frame dtype 'auto' means for a backend named as --backend names it ('webgpu', 'wasm', ...). */
export function defaultFrameDtype(backend: string): FrameDtype {
  return GPU_BACKENDS.has(backend) ? 'uint8' : 'float32';
}

/**
 * The active tfjs backend by --backend's names: tfjs calls both native packages 'tensorflow';
 * the GPU one is told apart by whether TensorFlow found a GPU.
 */
export function activeBackendName(): string {
  const name = tf.getBackend();
  if (name !== 'tensorflow') return name;
  return (tf.backend() as { isUsingGpuDevice?: boolean }).isUsingGpuDevice ? 'tfjs-node-gpu' : 'tfjs-node';
}

/** `choice`, with 'auto' (or nothing) resolved for `backend` (default: the active one). */
export function resolveFrameDtype(choice: FrameDtypeChoice | undefined, backend?: string): FrameDtype {
  if (choice === 'float32' || choice === 'uint8') return choice;
  return defaultFrameDtype(backend ?? activeBackendName());
}

export const FRAME_DTYPE_HELP =
  'batch frames: uint8 pixels normalised on the device, or float32 normalised by the loader threads (auto: uint8 on GPU backends, float32 on wasm/cpu)';
