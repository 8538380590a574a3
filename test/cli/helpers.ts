// Shared by the finetune and eval command tests: captured CLI output, tiny sharded datasets,
// and the real entry points run as child processes.
import { spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { runShardJob } from '../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../src/pipeline/sources/synthetic.ts';
import type { TrainIo } from '../../src/cli/train-main.ts';

export type CapturedIo = TrainIo & { out: string[]; err: string[]; signals: EventEmitter & Pick<NodeJS.Process, 'on' | 'off'> };

/** The flags of a tiny, quiet training run: B_1-Wi_16 on wasm, float32 frames, no intermediate checkpoints. */
export const tinyRunFlags = (batchSize: number): string[] => [
  '--arch',
  'B_1-Wi_16',
  '--batch-size',
  String(batchSize),
  '--workers',
  '1',
  '--backend',
  'wasm',
  '--frame-dtype',
  'float32',
  '--checkpoint-every',
  '0',
  '--quiet',
];

export function captureIo(): CapturedIo {
  const out: string[] = [];
  const err: string[] = [];
  const signals = new EventEmitter() as EventEmitter & Pick<NodeJS.Process, 'on' | 'off'>;
  return { out, err, signals, stdout: (s) => void out.push(s), stderr: (s) => void err.push(s), progress: null };
}

/** `count` synthetic 8x8 images in `numClasses` classes, stored at `res` (smaller = upscaled when read at 8). */
export async function makeShards(out: string, o: { count: number; numClasses: number; res: number; channels?: 1 | 3; seed?: number }): Promise<string> {
  await runShardJob(openSynthetic({ count: o.count, numClasses: o.numClasses, width: 8, height: 8, seed: o.seed ?? 1 }), {
    out,
    res: o.res,
    resize: 'max-side',
    encoding: 'raw',
    quality: 90,
    samplesPerShard: 16,
    workers: 1,
    seed: o.seed ?? 1,
    split: 'train',
    valFraction: 0,
    command: 'test',
    ...(o.channels ? { channels: o.channels } : {}),
  });
  return join(out, 'index.json');
}

const root = new URL('../../', import.meta.url).pathname;

/** Runs `node --import tsx src/cli/<name>.ts args...` from the repository root. */
export function runEntry(name: 'finetune' | 'eval', args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', join(root, 'src/cli', `${name}.ts`), ...args], { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}
