// Which part of a shard job this process writes: task I of N, from --task I/N or from the
// environment of an existing scheduler (a Kubernetes Indexed Job, a Slurm job array), and which
// shards that task owns. Tasks never talk to each other: each computes its own shards from
// (I, N) and the job's layout alone.
//
// Ownership is by contiguous blocks of the job's shard list (every split's shards in order,
// the primary split first): task t owns global shards [floor(t*K/N), floor((t+1)*K/N)). Blocks
// rather than round-robin (k mod N) because a block is a contiguous range of positions in the
// item order: a task reads only its slice of a plan's item file, and a stream source (re-sharding
// WebDataset shards, readable only in order) is read up to the end of the task's block and no
// further. Blocks differ in size by at most one shard.

export interface ShardTaskId {
  index: number;
  count: number;
  /** Where the numbers came from, for messages: "--task 1/4", "SLURM_ARRAY_TASK_ID=5 ...". */
  from: string;
}

/** A malformed or contradictory task id; the command turns it into a usage error (exit 2). */
export class TaskIdError extends Error {
  override readonly name = 'TaskIdError';
  constructor(
    /** The flag or variable at fault. */
    readonly variable: string,
    message: string,
  ) {
    super(message);
  }
}

type Env = Record<string, string | undefined>;

/** The variable Kubernetes Indexed Jobs do not set: the number of tasks (the Job's completions). */
export const TASKS_ENV = 'SMLP_SHARD_TASKS';

function integer(name: string, raw: string, min: number): number {
  const s = raw.trim();
  const n = /^\d+$/.test(s) ? Number(s) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min) throw new TaskIdError(name, `${name} must be an integer >= ${min}, got "${raw}"`);
  return n;
}

/** "I/N" with 0 <= I < N. */
export function parseTaskSpec(spec: string): ShardTaskId {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(spec);
  if (!m) throw new TaskIdError('--task', `--task must be I/N (task I of N, counting from 0), got "${spec}"`);
  const index = Number(m[1]);
  const count = Number(m[2]);
  if (!Number.isSafeInteger(count) || count < 1) throw new TaskIdError('--task', `--task ${spec}: the number of tasks must be at least 1`);
  if (!Number.isSafeInteger(index) || index >= count)
    throw new TaskIdError('--task', `--task ${spec}: the task index must be below the number of tasks (0..${count - 1})`);
  return { index, count, from: `--task ${index}/${count}` };
}

/**
 * This process's task, or null when it is no task (a whole-job run, also `--task none` whatever
 * the environment). `--task I/N` wins; then a
 * Kubernetes Indexed Job (JOB_COMPLETION_INDEX; N from --tasks or SMLP_SHARD_TASKS); then a
 * Slurm array (SLURM_ARRAY_TASK_ID less SLURM_ARRAY_TASK_MIN, divided by SLURM_ARRAY_TASK_STEP;
 * N from SLURM_ARRAY_TASK_COUNT or --tasks). Throws TaskIdError on anything malformed.
 */
export function resolveTaskId(flags: { task?: string | undefined; tasks?: string | undefined }, env: Env = process.env): ShardTaskId | null {
  // A whole-job run inside a scheduler's array (each element sharding another dataset).
  if (flags.task?.trim() === 'none') {
    if (flags.tasks !== undefined) throw new TaskIdError('--tasks', '--tasks contradicts --task none');
    return null;
  }
  const flagCount = flags.tasks === undefined ? undefined : integer('--tasks', flags.tasks, 1);
  if (flags.task !== undefined) {
    const t = parseTaskSpec(flags.task);
    if (flagCount !== undefined && flagCount !== t.count) throw new TaskIdError('--tasks', `--tasks ${flagCount} contradicts --task ${flags.task}`);
    return t;
  }
  const set = (name: string): string | undefined => (env[name] === undefined || env[name] === '' ? undefined : env[name]);
  const k8s = set('JOB_COMPLETION_INDEX');
  if (k8s !== undefined) {
    const index = integer('JOB_COMPLETION_INDEX', k8s, 0);
    const rawCount = set(TASKS_ENV);
    const count = flagCount ?? (rawCount === undefined ? undefined : integer(TASKS_ENV, rawCount, 1));
    if (count === undefined) {
      throw new TaskIdError(
        '--tasks',
        `JOB_COMPLETION_INDEX is set (${k8s}) but not the number of tasks: pass --tasks N (the Job's completions) or set ${TASKS_ENV}`,
      );
    }
    const from = `JOB_COMPLETION_INDEX=${index} ${flagCount !== undefined ? `--tasks ${count}` : `${TASKS_ENV}=${count}`}`;
    if (index >= count) throw new TaskIdError('JOB_COMPLETION_INDEX', `task index ${index} is not below the number of tasks ${count} (${from})`);
    return { index, count, from };
  }
  const slurm = set('SLURM_ARRAY_TASK_ID');
  if (slurm !== undefined) {
    const id = integer('SLURM_ARRAY_TASK_ID', slurm, 0);
    // Arrays need not start at 0 (--array=1-8) nor step by 1 (--array=0-15:4).
    const min = set('SLURM_ARRAY_TASK_MIN') === undefined ? 0 : integer('SLURM_ARRAY_TASK_MIN', env['SLURM_ARRAY_TASK_MIN']!, 0);
    const step = set('SLURM_ARRAY_TASK_STEP') === undefined ? 1 : integer('SLURM_ARRAY_TASK_STEP', env['SLURM_ARRAY_TASK_STEP']!, 1);
    const rawCount = set('SLURM_ARRAY_TASK_COUNT');
    const count = flagCount ?? (rawCount === undefined ? undefined : integer('SLURM_ARRAY_TASK_COUNT', rawCount, 1));
    if (count === undefined) throw new TaskIdError('--tasks', `SLURM_ARRAY_TASK_ID is set (${slurm}) but SLURM_ARRAY_TASK_COUNT is not: pass --tasks N`);
    const countFrom = flagCount !== undefined ? `--tasks ${count}` : `SLURM_ARRAY_TASK_COUNT=${count}`;
    const from = `SLURM_ARRAY_TASK_ID=${id}${min ? ` SLURM_ARRAY_TASK_MIN=${min}` : ''}${step !== 1 ? ` SLURM_ARRAY_TASK_STEP=${step}` : ''} ${countFrom}`;
    if (id < min || (id - min) % step !== 0) {
      throw new TaskIdError('SLURM_ARRAY_TASK_ID', `array task ${id} is not on the array's range (${from}); use a plain range such as --array=0-${count - 1}`);
    }
    const index = (id - min) / step;
    if (index >= count) {
      throw new TaskIdError(
        'SLURM_ARRAY_TASK_ID',
        `array task ${id} is task ${index} of ${count} (${from}): the array's ids must be one range without gaps, such as --array=0-${count - 1}`,
      );
    }
    return { index, count, from };
  }
  if (flagCount !== undefined) {
    throw new TaskIdError('--tasks', `--tasks ${flagCount} needs the task's index: --task I/${flagCount}, JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID`);
  }
  return null;
}

/** Shards a split of `count` items needs at `samplesPerShard` each. */
export function shardCount(count: number, samplesPerShard: number): number {
  return Math.ceil(count / samplesPerShard);
}

/** First global shard of task `t` of `n` over `total` shards. */
function blockStart(t: number, n: number, total: number): number {
  return Math.floor((t * total) / n);
}

/**
 * Task `task`'s shards of each split, as [lo, hi) shard numbers within the split (empty when
 * lo === hi), from the splits' shard counts in job order.
 */
export function ownedShardRanges(shardsPerSplit: readonly number[], task: Pick<ShardTaskId, 'index' | 'count'>): [number, number][] {
  const total = shardsPerSplit.reduce((a, b) => a + b, 0);
  const g0 = blockStart(task.index, task.count, total);
  const g1 = blockStart(task.index + 1, task.count, total);
  let base = 0;
  return shardsPerSplit.map((n) => {
    const lo = Math.min(n, Math.max(0, g0 - base));
    const hi = Math.min(n, Math.max(0, g1 - base));
    base += n;
    return [lo, Math.max(lo, hi)];
  });
}

/** The task (of `count`) that owns global shard `g` of `total`. */
export function ownerOf(g: number, total: number, count: number): number {
  // blockStart is monotone in t: the owner is the last task whose block starts at or before g.
  let lo = 0;
  let hi = count - 1;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (blockStart(mid, count, total) <= g) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}
