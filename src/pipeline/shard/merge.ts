// The last step of a job run as tasks: check that every shard of the job is complete, then write
// the indexes and errors.jsonl from the shards' records exactly as a one-process run writes them
// (the same function writes both), and remove the job state. Nothing is re-listed: the class list,
// splits and listing errors come from the layout the tasks (or the plan) recorded.
import { ShardJobError } from './errors.ts';
import { PARTIAL_DIR, shardName, type ShardRecord } from './job-state.ts';
import { JOB_FILE, LAYOUT_FILE, LocalOutputStore, TASKS_FILE, type OutputStore } from './output-store.ts';
import { writeJobOutputs, type JobLayout, type SplitSummary } from './shard-job.ts';
import { ownerOf, shardCount } from './task-id.ts';

export interface MergeOptions {
  out: string;
  /** Recorded in the indexes' created_by. */
  command: string;
  store?: OutputStore;
}

export interface MergeSummary {
  out: string;
  /** 'complete': the output already held the merged dataset; nothing was written. */
  state: 'merged' | 'complete';
  splits: SplitSummary[];
  errors: number;
  seconds: number;
}

/** Some shards of the job are not complete; `missing` names them (with the task that owns each, when known). */
export class IncompleteJobError extends ShardJobError {
  override readonly name = 'IncompleteJobError';
  constructor(
    where: string,
    readonly missing: string[],
    readonly total: number,
    readonly tasks: number[],
    taskCount: number | null,
  ) {
    const shown = missing.slice(0, 20).join(', ') + (missing.length > 20 ? `, ... (${missing.length - 20} more)` : '');
    const rerun = taskCount === null ? '' : `; run again task${tasks.length > 1 ? 's' : ''} ${compactList(tasks)} of ${taskCount}`;
    super(`${missing.length} of ${total} shards are not complete: ${shown}${rerun}`, where);
  }
}

/** 0,1,2,5,7,8 -> "0-2, 5, 7-8". */
function compactList(xs: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < xs.length; ) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j]! + 1) j++;
    parts.push(j > i ? `${xs[i]}-${xs[j]}` : String(xs[i]));
    i = j + 1;
  }
  return parts.join(', ');
}

export async function mergeShardJob(o: MergeOptions): Promise<MergeSummary> {
  const started = performance.now();
  const store = o.store ?? new LocalOutputStore(o.out);
  const fingerprint = await store.readState(JOB_FILE);
  if (fingerprint === null) {
    const index = await store.readFile('index.json');
    if (index !== null) return { out: o.out, state: 'complete', splits: [], errors: 0, seconds: (performance.now() - started) / 1000 };
    throw new ShardJobError(
      `holds no shard job (no ${PARTIAL_DIR}/${JOB_FILE}): run the tasks (npm run shard -- <source> ... --task I/N) first`,
      store.location,
    );
  }
  const layoutText = await store.readState(LAYOUT_FILE);
  if (layoutText === null) {
    throw new ShardJobError(
      `holds an unfinished one-process job (no ${PARTIAL_DIR}/${LAYOUT_FILE}, which tasks and plans write): finish it by running the same command again`,
      store.location,
    );
  }
  const layout = JSON.parse(layoutText) as JobLayout;
  if (layout.fingerprint !== fingerprint)
    throw new ShardJobError(`${PARTIAL_DIR}/${LAYOUT_FILE} belongs to another job than ${PARTIAL_DIR}/${JOB_FILE}`, store.location);
  const tasksText = await store.readState(TASKS_FILE);
  const taskCount = tasksText === null ? null : (JSON.parse(tasksText) as { count: number }).count;
  const S = layout.samplesPerShard;
  const records = new Map<string, ShardRecord>();
  const missing: string[] = [];
  const owners = new Set<number>();
  const total = layout.splits.reduce((a, s) => a + shardCount(s.count ?? 0, S), 0);
  let g = 0;
  for (const split of layout.splits) {
    for (let k = 0; k < shardCount(split.count ?? 0, S); k++, g++) {
      const name = shardName(split.name, k);
      const r = await store.readRecord(name);
      if (r) {
        records.set(name, r);
        continue;
      }
      if (taskCount !== null) {
        const t = ownerOf(g, total, taskCount);
        owners.add(t);
        missing.push(`${name} (task ${t})`);
      } else {
        missing.push(name);
      }
    }
  }
  if (missing.length > 0) {
    throw new IncompleteJobError(
      store.location,
      missing,
      total,
      [...owners].sort((a, b) => a - b),
      taskCount,
    );
  }
  const { splits, errors } = await writeJobOutputs(store, layout, records, o.command, o.out);
  await store.removeTemporaries();
  await store.finish();
  return { out: o.out, state: 'merged', splits, errors, seconds: (performance.now() - started) / 1000 };
}
