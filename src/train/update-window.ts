// The micro-batches of one optimizer update: their time waiting for data and computing, their
// samples, and their loss and hit counts, kept on the device until the update reads them back
// in one transfer.
import * as tf from '@tensorflow/tfjs';
import type { MicroResult } from './step.ts';

export interface WindowSums {
  lossSum: number;
  top1: number;
  top5: number;
}

export class UpdateWindow {
  waitMs = 0;
  computeMs = 0;
  samples = 0;
  private scalars: tf.Tensor[] = [];

  /** Keeps a micro-batch's loss (as a sum) and hit counts; disposes the result's scalars. */
  add(res: Pick<MicroResult, 'loss' | 'top1' | 'top5'>, n: number): void {
    this.scalars.push(tf.tidy(() => tf.stack([tf.mul(res.loss, n), res.top1, res.top5])));
    tf.dispose([res.loss, res.top1, res.top5]);
    this.samples += n;
  }

  /** Reads the window's loss and hit sums back (one transfer, awaited together with `extra`). */
  async readBack<T>(extra: Promise<T>): Promise<[WindowSums, T]> {
    const stacked = tf.stack(this.scalars);
    tf.dispose(this.scalars);
    this.scalars = [];
    let vals: Float32Array | Int32Array | Uint8Array;
    let other: T;
    try {
      [vals, other] = await Promise.all([stacked.data(), extra]);
    } finally {
      stacked.dispose();
    }
    const totals: WindowSums = { lossSum: 0, top1: 0, top5: 0 };
    for (let i = 0; i < vals.length; i += 3) {
      totals.lossSum += vals[i]!;
      totals.top1 += vals[i + 1]!;
      totals.top5 += vals[i + 2]!;
    }
    return [totals, other];
  }

  /** Wall time of the window: waiting plus computing. */
  get wallMs(): number {
    return this.waitMs + this.computeMs;
  }

  /** Starts the next window (its timers and count; the scalars were taken by readBack). */
  reset(): void {
    this.waitMs = this.computeMs = this.samples = 0;
  }

  dispose(): void {
    tf.dispose(this.scalars);
    this.scalars = [];
  }
}
