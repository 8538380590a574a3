// From records to (x, y) series. A run's log is first reduced to the timeline that the final
// model actually followed: a "resume" record (or a step whose global_step goes back) drops
// the records logged after the point it went back to. Then each metric becomes points on the
// chosen x axis; a record without the metric gives a gap (y = null).
import type { MetricsRecord, Run } from './read-metrics.ts';

export type XMode = 'step' | 'epoch' | 'samples';
export const X_MODES: readonly XMode[] = ['step', 'epoch', 'samples'];
export type Source = 'step' | 'epoch';

export interface Point {
  x: number;
  /** null: the record has no value for the metric (a gap in the line). */
  y: number | null;
}

export interface MetricRef {
  /** As the user wrote it (loss, val_top1, epoch.images_per_sec). */
  name: string;
  source: Source;
  field: string;
}

/** Record fields that are coordinates or bookkeeping, not metrics. */
const NOT_METRICS = new Set(['type', 'epoch', 'step', 'global_step', 'samples', 'time']);

function num(r: MetricsRecord, field: string): number | undefined {
  const v = r.data[field];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}

export interface Timeline {
  steps: MetricsRecord[];
  epochs: MetricsRecord[];
  /** Training images seen up to and including each kept step (parallel to steps). */
  cumSamples: number[];
  /** Batches per epoch as seen in the log (max "step" + 1), for fractional epochs. */
  batchesPerEpoch: number | null;
}

export function timeline(run: Pick<Run, 'records'>): Timeline {
  let steps: MetricsRecord[] = [];
  let epochs: MetricsRecord[] = [];
  const keepUpTo = (g: number, inclusive: boolean): void => {
    const keep = (r: MetricsRecord): boolean => {
      const rg = num(r, 'global_step');
      return rg === undefined || (inclusive ? rg <= g : rg < g);
    };
    steps = steps.filter(keep);
    epochs = epochs.filter(keep);
  };
  let lastStepG = -Infinity;
  for (const r of run.records) {
    const g = num(r, 'global_step');
    if (r.type === 'resume') {
      if (g !== undefined) keepUpTo(g, true);
      lastStepG = g ?? lastStepG;
    } else if (r.type === 'step') {
      if (g !== undefined) {
        if (g <= lastStepG) keepUpTo(g, false);
        lastStepG = g;
      }
      steps.push(r);
    } else if (r.type === 'epoch') {
      if (g !== undefined) epochs = epochs.filter((e) => (num(e, 'global_step') ?? -Infinity) < g);
      epochs.push(r);
    }
  }
  const cumSamples: number[] = [];
  let total = 0;
  let lastBatch: number | undefined;
  let maxStep = -1;
  for (const s of steps) {
    const n = num(s, 'samples') ?? lastBatch;
    lastBatch = n;
    total += n ?? Number.NaN;
    cumSamples.push(total);
    maxStep = Math.max(maxStep, num(s, 'step') ?? -1);
  }
  return { steps, epochs, cumSamples, batchesPerEpoch: maxStep >= 0 ? maxStep + 1 : null };
}

/** Images seen at update g: from the last kept step at or before g. */
function samplesAt(tl: Timeline, g: number): number | undefined {
  for (let i = tl.steps.length - 1; i >= 0; i--) {
    const sg = num(tl.steps[i]!, 'global_step');
    if (sg !== undefined && sg <= g) return Number.isFinite(tl.cumSamples[i]!) ? tl.cumSamples[i] : undefined;
  }
  return undefined;
}

/**
 * Where a record sits on the x axis. step: global_step; samples: images seen so far;
 * epoch: a step record at epoch + (step + 1) / batchesPerEpoch, an epoch record at epoch + 1
 * (the moment it ended), so "1" is the end of the first epoch.
 */
export function xOf(tl: Timeline, source: Source, index: number, mode: XMode): number | undefined {
  const r = source === 'step' ? tl.steps[index]! : tl.epochs[index]!;
  if (mode === 'step') return num(r, 'global_step');
  if (mode === 'samples') {
    if (source === 'step') return Number.isFinite(tl.cumSamples[index]!) ? tl.cumSamples[index] : undefined;
    const g = num(r, 'global_step');
    return g === undefined ? undefined : samplesAt(tl, g);
  }
  const e = num(r, 'epoch');
  if (e === undefined) return undefined;
  if (source === 'epoch') return e + 1;
  const s = num(r, 'step');
  return s === undefined || tl.batchesPerEpoch === null ? undefined : e + (s + 1) / tl.batchesPerEpoch;
}

export interface SeriesResult {
  points: Point[];
  /** Records of the metric's kind that could not be placed on the x axis (no global_step, ...). */
  unplaced: number;
}

export function seriesFor(tl: Timeline, ref: MetricRef, mode: XMode): SeriesResult {
  const recs = ref.source === 'step' ? tl.steps : tl.epochs;
  const points: Point[] = [];
  let unplaced = 0;
  for (let i = 0; i < recs.length; i++) {
    const x = xOf(tl, ref.source, i, mode);
    if (x === undefined) {
      unplaced++;
      continue;
    }
    points.push({ x, y: num(recs[i]!, ref.field) ?? null });
  }
  return { points, unplaced };
}

export interface MetricFields {
  step: string[];
  epoch: string[];
}

/** Numeric fields of step and epoch records over all runs, in first-seen order. */
export function metricFields(runs: readonly Pick<Run, 'records'>[]): MetricFields {
  const step = new Set<string>();
  const epoch = new Set<string>();
  for (const run of runs) {
    for (const r of run.records) {
      const into = r.type === 'step' ? step : r.type === 'epoch' ? epoch : null;
      if (!into) continue;
      for (const [k, v] of Object.entries(r.data)) if (!NOT_METRICS.has(k) && typeof v === 'number') into.add(k);
    }
  }
  return { step: [...step], epoch: [...epoch] };
}

/**
 * A metric name: a field of step or epoch records, or "step.<field>" / "epoch.<field>" to pick
 * the kind. A field that both kinds have (images_per_sec, stall_pct) comes from epoch records
 * with --x epoch and from step records otherwise.
 */
export function resolveMetric(name: string, fields: MetricFields, mode: XMode): MetricRef | undefined {
  const m = /^(step|epoch)\.(.+)$/.exec(name);
  if (m) {
    const source = m[1] as Source;
    return fields[source].includes(m[2]!) ? { name, source, field: m[2]! } : undefined;
  }
  const inStep = fields.step.includes(name);
  const inEpoch = fields.epoch.includes(name);
  if (inStep && inEpoch) return { name, source: mode === 'epoch' ? 'epoch' : 'step', field: name };
  if (inStep) return { name, source: 'step', field: name };
  if (inEpoch) return { name, source: 'epoch', field: name };
  return undefined;
}

/** "loss, lr, ... (step records); train_loss, ... (epoch records)" for error messages. */
export function describeAvailable(fields: MetricFields): string {
  const parts: string[] = [];
  const both = fields.step.filter((f) => fields.epoch.includes(f));
  if (fields.step.length) parts.push(`${fields.step.join(', ')} (per update)`);
  if (fields.epoch.length) parts.push(`${fields.epoch.join(', ')} (per epoch)`);
  let s = parts.join('; ') || 'none';
  if (both.length) s += `; ${both.map((f) => `step.${f}/epoch.${f}`).join(', ')} pick the kind`;
  return s;
}

export function defaultMetrics(fields: MetricFields): string[] {
  const has = (f: string): boolean => fields.step.includes(f) || fields.epoch.includes(f);
  const accuracy = has('val_top1') ? 'val_top1' : 'train_top1';
  return ['loss', accuracy, 'images_per_sec'].filter(has);
}

const DESCRIPTIONS: Record<string, string> = {
  loss: 'training loss per update',
  lr: 'learning rate',
  images_per_sec: 'throughput, images/s',
  stall_pct: 'time waiting for input, %',
  wait_ms: 'wait for data per update, ms',
  compute_ms: 'compute per update, ms',
  grad_norm: 'gradient norm',
  train_loss: 'training loss, epoch mean',
  train_top1: 'training top-1 accuracy, %',
  train_top5: 'training top-5 accuracy, %',
  val_loss: 'validation loss',
  val_top1: 'validation top-1 accuracy, %',
  val_top5: 'validation top-5 accuracy, %',
  seconds: 'epoch time, s',
  eval_seconds: 'evaluation time, s',
};

/** A human description for the panel title ("" when the field is not one we know). */
export function describeMetric(ref: MetricRef, fields: MetricFields): string {
  const d = DESCRIPTIONS[ref.field] ?? '';
  const shared = fields.step.includes(ref.field) && fields.epoch.includes(ref.field);
  if (!shared) return d;
  const kind = ref.source === 'epoch' ? 'epoch mean' : 'per update';
  return d ? `${d} (${kind})` : kind;
}

export const X_LABELS: Record<XMode, string> = {
  step: 'update (global step)',
  epoch: 'epoch',
  samples: 'training images seen',
};
