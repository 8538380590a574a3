// The shard command's parts for jobs split over machines: the task id from flags or the
// scheduler's environment, the check of a task's command line against the plan, `merge`, and
// the messages of tasks and plans.
import { mergeShardJob } from '../pipeline/shard/merge.ts';
import type { OutputStore } from '../pipeline/shard/output-store.ts';
import { openOutputStore, withS3OutputLock } from '../pipeline/shard/s3-output-store.ts';
import { isS3Url } from '../shared/s3.ts';
import type { PlanSummary } from '../pipeline/shard/plan.ts';
import type { ShardJobSummary } from '../pipeline/shard/shard-job.ts';
import { resolveTaskId, TaskIdError, type ShardTaskId } from '../pipeline/shard/task-id.ts';
import type { TaskLock } from '../pipeline/shard/task-lock.ts';
import { defaultIo, EXIT, UsageError, withOutputLock } from './command.ts';
import { str, type Raw } from './flags.ts';
import { formatDuration } from './progress.ts';

/**
 * What a shard command asks for: the source and every option that shapes the output (not
 * --workers, --out ...). A plan records it; a task's must be equal. Keys in a fixed order and
 * absent rather than undefined, so equal requests have equal JSON.
 */
export interface ShardRequest {
  source: {
    kind: string;
    paths: string[];
    labels?: string;
    classesFile?: string;
    minPerClass?: number;
    cifarLabels: 'fine' | 'coarse';
    count?: number;
    numClasses?: number;
    imageSize?: { width: number; height: number };
    noShuffle: boolean;
  };
  job: {
    res: number;
    resize: 'max-side' | 'center-crop';
    encoding: 'raw' | 'jpeg';
    quality: number;
    channels?: 1 | 3;
    samplesPerShard: number;
    seed: number;
    split: string;
    valFraction: number;
    limit?: number;
  };
}

/** Flags that are part of the request (the rest: --out, --workers, --task ... are not). */
export const REQUEST_FLAGS = [
  'res',
  'resize',
  'encoding',
  'quality',
  'samples-per-shard',
  'seed',
  'split',
  'val-fraction',
  'limit',
  'channels',
  'no-shuffle',
  'min-per-class',
  'labels',
  'classes',
  'cifar-labels',
  'count',
  'num-classes',
  'image-size',
] as const;

/** --task / --tasks / the scheduler's environment; a malformed one is a usage error. */
export function taskFromFlags(v: Raw, env: Record<string, string | undefined> = process.env): ShardTaskId | null {
  try {
    return resolveTaskId({ task: str(v, 'task'), tasks: str(v, 'tasks') }, env);
  } catch (e) {
    if (e instanceof TaskIdError) throw new UsageError(e.message);
    throw e;
  }
}

function flatten(x: unknown, prefix = '', out = new Map<string, string>()): Map<string, string> {
  if (x !== null && typeof x === 'object' && !Array.isArray(x)) {
    for (const [k, v] of Object.entries(x)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.set(prefix, JSON.stringify(x));
  }
  return out;
}

/** Throws a usage error listing every difference between a task's request and the plan's. */
export function checkRequestAgainstPlan(mine: ShardRequest, planned: unknown, planFile: string): void {
  if (JSON.stringify(mine) === JSON.stringify(planned)) return;
  const a = flatten(planned);
  const b = flatten(mine);
  const diffs = [...new Set([...a.keys(), ...b.keys()])]
    .filter((k) => a.get(k) !== b.get(k))
    .map((k) => `${k}: plan ${a.get(k) ?? '(not set)'}, this command ${b.get(k) ?? '(not set)'}`);
  throw new UsageError(
    `the source or options differ from the plan in ${planFile}:\n  ${diffs.join('\n  ')}\n` +
      'give the same source and options as the plan, or none of them (then the plan provides them)',
  );
}

export async function mergeCommand(v: Raw, positionals: string[], argv: string[], quiet: boolean): Promise<number> {
  if (positionals.length > 0) throw new UsageError(`merge takes no source (the job's layout is in its output), got ${positionals.join(' ')}`);
  const extra = Object.keys(v).filter((k) => !['out', 'quiet'].includes(k));
  if (extra.length > 0) throw new UsageError(`merge takes only --out and --quiet, got --${extra.join(', --')}`);
  const out = str(v, 'out');
  if (!out) throw new UsageError('merge needs --out <dir|s3://bucket/prefix>: the output the tasks wrote', 'out');
  const command = ['npm run shard --', ...argv].join(' ');
  const store = openOutputStore(out);
  const lock = isS3Url(out) ? withS3OutputLock : withOutputLock;
  const summary = await lock(out, ['shard', ...argv].join(' '), defaultIo, () => mergeShardJob({ out, command, store }));
  if (!quiet) {
    if (summary.state === 'complete') process.stderr.write(`${out} already holds the merged dataset; nothing to do\n`);
    for (const s of summary.splits) {
      process.stderr.write(
        `${s.split}: ${s.samples.toLocaleString('en-US')} samples in ${s.shards} shards (${(s.bytes / 1e6).toFixed(1)} MB), ${s.skipped} skipped -> ${s.index}\n`,
      );
    }
    if (summary.errors) process.stderr.write(`${summary.errors} problems listed in ${out}/errors.jsonl\n`);
  }
  process.stdout.write(`${JSON.stringify(summary)}\n`);
  return EXIT.ok;
}

/** Runs `body` holding task `task`'s lock of the output, with notes on waiting and takeovers. */
export async function withTaskLock<T>(store: OutputStore, task: ShardTaskId, command: string, body: () => Promise<T>): Promise<T> {
  const lock: TaskLock = await store.lockTask(task, command, {
    onWait: (h) =>
      process.stderr.write(
        `note: task ${task.index}/${task.count} is locked by ${h ? `pid ${h.pid} on ${h.host} (${h.command})` : 'an unreadable lock'}; waiting until it is released or not refreshed for a minute\n`,
      ),
    onTakeover: (h, why) =>
      process.stderr.write(`note: took over the lock of task ${task.index}/${task.count}${h ? ` left by pid ${h.pid} on ${h.host}` : ''}: ${why}\n`),
  });
  try {
    return await body();
  } finally {
    await lock.release();
  }
}

export function reportTask(summary: ShardJobSummary, out: string, task: ShardTaskId): void {
  const t = summary.task!;
  const rate = summary.processed / Math.max(summary.seconds, 1e-9);
  process.stderr.write(
    `task ${t.index}/${t.count} (${task.from}): ${t.shards} of ${t.of} shards` +
      `${t.resumed ? ` (${t.resumed} already complete)` : ''}, ${summary.processed.toLocaleString('en-US')} images in ${formatDuration(summary.seconds)}: ` +
      `${Math.round(rate).toLocaleString('en-US')} images/s${summary.errors ? `, ${summary.errors} skipped` : ''}\n` +
      (summary.state === 'complete' ? `${out} already holds the merged dataset\n` : `when every task is done: npm run shard -- merge --out ${out}\n`),
  );
}

export function reportPlan(summary: PlanSummary, out: string): void {
  if (summary.state === 'complete') {
    process.stderr.write(`${out} already holds this dataset, complete; nothing to plan\n`);
    return;
  }
  const shards = summary.splits.reduce((a, s) => a + s.shards, 0);
  process.stderr.write(
    `plan: ${summary.items.toLocaleString('en-US')} items in ${shards} shards (${summary.splits.map((s) => `${s.name} ${s.shards}`).join(', ')}) in ${formatDuration(summary.seconds)}; ` +
      `${summary.recordedItems ? 'tasks read the items from the plan, not the source' : 'tasks read the source itself (its items are its data), checked against the plan'}\n` +
      `next: N tasks, each: npm run shard -- --out ${out} --task I/N   then: npm run shard -- merge --out ${out}\n`,
  );
}
