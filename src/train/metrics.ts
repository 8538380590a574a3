// metrics.jsonl: one JSON object per line, "type": "step" per optimizer update and "type":
// "epoch" per epoch. Both carry the run's cumulative compute as the paper counts it (its
// get_compute: 3 x FLOP(forward) x samples): compute_flops, with 2 FLOPs per multiply-add of the
// Linear layers (so 6 x forward multiply-adds per sample; the reference measures FLOP(forward) with
// fvcore, which counts one per multiply-add, i.e. half these numbers), and compute_pflop.
// Appended synchronously so a crash loses at most the line being written.
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export interface StepRecord {
  type: 'step';
  epoch: number;
  /** Index of the update's last batch within the epoch. */
  step: number;
  global_step: number;
  samples: number;
  loss: number;
  lr: number;
  images_per_sec: number;
  stall_pct: number;
  wait_ms: number;
  compute_ms: number;
  grad_norm?: number;
  /** Cumulative training compute of the run: 3 x forward FLOPs x samples trained on so far. */
  compute_flops: number;
  /** compute_flops / 1e15. */
  compute_pflop: number;
}

export interface EpochRecord {
  type: 'epoch';
  epoch: number;
  global_step: number;
  train_loss: number;
  train_top1: number;
  train_top5: number;
  val_loss?: number;
  val_top1?: number;
  val_top5?: number;
  images_per_sec: number;
  stall_pct: number;
  seconds: number;
  eval_seconds?: number;
  compute_flops: number;
  compute_pflop: number;
}

export class MetricsLog {
  constructor(readonly path: string) {
    mkdirSync(dirname(path), { recursive: true });
  }

  write(record: StepRecord | EpochRecord | Record<string, unknown>): void {
    appendFileSync(this.path, `${JSON.stringify({ ...record, time: new Date().toISOString() })}\n`);
  }
}

/** Percentages and rates rounded for humans and files alike. */
export function round(x: number, digits = 4): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
