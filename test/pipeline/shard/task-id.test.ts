import t from 'tap';
import { ownedShardRanges, ownerOf, parseTaskSpec, resolveTaskId, TaskIdError } from '../../../src/pipeline/shard/task-id.ts';

t.test('--task I/N: accepted and refused values', async (t) => {
  t.same(parseTaskSpec('0/1'), { index: 0, count: 1, from: '--task 0/1' });
  t.same(parseTaskSpec(' 2/3 '), { index: 2, count: 3, from: '--task 2/3' });
  for (const bad of ['3/3', '-1/2', 'a/b', '0/0', '1', '1/2/3', '', '1.5/3', '0x1/2']) {
    t.throws(() => parseTaskSpec(bad), TaskIdError, `"${bad}" refused`);
  }
  t.throws(() => parseTaskSpec('3/3'), /index must be below the number of tasks \(0\.\.2\)/);
  t.throws(() => parseTaskSpec('0/0'), /at least 1/);
});

t.test('the flag wins over the environment; --tasks must agree with it', async (t) => {
  const env = { JOB_COMPLETION_INDEX: '5', SMLP_SHARD_TASKS: '8', SLURM_ARRAY_TASK_ID: '1', SLURM_ARRAY_TASK_COUNT: '2' };
  t.same(resolveTaskId({ task: '1/4' }, env), { index: 1, count: 4, from: '--task 1/4' });
  t.same(resolveTaskId({ task: '1/4', tasks: '4' }, env)?.index, 1);
  t.throws(() => resolveTaskId({ task: '1/4', tasks: '5' }, env), /--tasks 5 contradicts --task 1\/4/);
  t.equal(resolveTaskId({}, {}), null, 'no flag, no scheduler: not a task');
  t.equal(resolveTaskId({ task: 'none' }, env), null, '--task none: a whole-job run inside an array');
  t.throws(() => resolveTaskId({ task: 'none', tasks: '2' }, env), /contradicts/);
  t.throws(() => resolveTaskId({ tasks: '4' }, {}), /needs the task's index/);
});

t.test('Kubernetes Indexed Job: JOB_COMPLETION_INDEX with the count from --tasks or SMLP_SHARD_TASKS', async (t) => {
  t.same(resolveTaskId({}, { JOB_COMPLETION_INDEX: '3', SMLP_SHARD_TASKS: '4' }), { index: 3, count: 4, from: 'JOB_COMPLETION_INDEX=3 SMLP_SHARD_TASKS=4' });
  t.same(resolveTaskId({ tasks: '6' }, { JOB_COMPLETION_INDEX: '3', SMLP_SHARD_TASKS: '4' }), {
    index: 3,
    count: 6,
    from: 'JOB_COMPLETION_INDEX=3 --tasks 6',
  });
  t.throws(() => resolveTaskId({}, { JOB_COMPLETION_INDEX: '3' }), /pass --tasks N \(the Job's completions\) or set SMLP_SHARD_TASKS/);
  t.throws(() => resolveTaskId({}, { JOB_COMPLETION_INDEX: '4', SMLP_SHARD_TASKS: '4' }), /task index 4 is not below the number of tasks 4/);
  t.throws(() => resolveTaskId({}, { JOB_COMPLETION_INDEX: 'x', SMLP_SHARD_TASKS: '4' }), /JOB_COMPLETION_INDEX must be an integer/);
  t.throws(() => resolveTaskId({}, { JOB_COMPLETION_INDEX: '1', SMLP_SHARD_TASKS: '0' }), /SMLP_SHARD_TASKS must be an integer >= 1/);
  t.same(resolveTaskId({}, { JOB_COMPLETION_INDEX: '' }), null, 'an empty variable is unset');
  t.equal(
    resolveTaskId({}, { JOB_COMPLETION_INDEX: '0', SMLP_SHARD_TASKS: '2', SLURM_ARRAY_TASK_ID: '1', SLURM_ARRAY_TASK_COUNT: '2' })?.index,
    0,
    'Kubernetes before Slurm',
  );
});

t.test('Slurm arrays: ids less SLURM_ARRAY_TASK_MIN, divided by the step; gaps refused', async (t) => {
  t.same(resolveTaskId({}, { SLURM_ARRAY_TASK_ID: '2', SLURM_ARRAY_TASK_COUNT: '4' }), {
    index: 2,
    count: 4,
    from: 'SLURM_ARRAY_TASK_ID=2 SLURM_ARRAY_TASK_COUNT=4',
  });
  // --array=1-4: ids 1..4 are tasks 0..3.
  t.same(resolveTaskId({}, { SLURM_ARRAY_TASK_ID: '4', SLURM_ARRAY_TASK_MIN: '1', SLURM_ARRAY_TASK_MAX: '4', SLURM_ARRAY_TASK_COUNT: '4' }), {
    index: 3,
    count: 4,
    from: 'SLURM_ARRAY_TASK_ID=4 SLURM_ARRAY_TASK_MIN=1 SLURM_ARRAY_TASK_COUNT=4',
  });
  // --array=10-16:3: ids 10, 13, 16 are tasks 0, 1, 2.
  t.equal(resolveTaskId({}, { SLURM_ARRAY_TASK_ID: '13', SLURM_ARRAY_TASK_MIN: '10', SLURM_ARRAY_TASK_STEP: '3', SLURM_ARRAY_TASK_COUNT: '3' })?.index, 1);
  t.throws(
    () => resolveTaskId({}, { SLURM_ARRAY_TASK_ID: '12', SLURM_ARRAY_TASK_MIN: '10', SLURM_ARRAY_TASK_STEP: '3', SLURM_ARRAY_TASK_COUNT: '3' }),
    /not on the array's range/,
  );
  // --array=0,5,7: three tasks, but id 5 would be task 5.
  t.throws(
    () => resolveTaskId({}, { SLURM_ARRAY_TASK_ID: '5', SLURM_ARRAY_TASK_MIN: '0', SLURM_ARRAY_TASK_COUNT: '3' }),
    /one range without gaps, such as --array=0-2/,
  );
  t.throws(() => resolveTaskId({}, { SLURM_ARRAY_TASK_ID: '1' }), /SLURM_ARRAY_TASK_COUNT is not/);
  t.equal(resolveTaskId({ tasks: '2' }, { SLURM_ARRAY_TASK_ID: '1' })?.count, 2);
});

t.test('ownership: contiguous blocks covering every shard exactly once, sizes differing by at most one', async (t) => {
  // By hand: 6 train + 2 val shards over 3 tasks -> global blocks [0,2) [2,5) [5,8).
  t.same(ownedShardRanges([6, 2], { index: 0, count: 3 }), [
    [0, 2],
    [0, 0],
  ]);
  t.same(ownedShardRanges([6, 2], { index: 1, count: 3 }), [
    [2, 5],
    [0, 0],
  ]);
  t.same(ownedShardRanges([6, 2], { index: 2, count: 3 }), [
    [5, 6],
    [0, 2],
  ]);
  t.same(ownedShardRanges([2], { index: 3, count: 5 }), [[1, 1]], 'more tasks than shards: some own nothing');
  for (const [splits, n] of [
    [[7, 3], 4],
    [[1], 1],
    [[10, 0, 5], 7],
    [[2, 2], 9],
    [[2600, 27], 64],
  ] as [number[], number][]) {
    const total = splits.reduce((a, b) => a + b, 0);
    const owner = new Array<number>(total).fill(-1);
    const sizes: number[] = [];
    let twice = 0;
    for (let i = 0; i < n; i++) {
      let base = 0;
      let size = 0;
      ownedShardRanges(splits, { index: i, count: n }).forEach(([lo, hi], s) => {
        for (let k = lo; k < hi; k++) {
          if (owner[base + k] !== -1) twice++;
          owner[base + k] = i;
          size++;
        }
        base += splits[s]!;
      });
      sizes.push(size);
    }
    t.equal(twice, 0, `${splits} over ${n}: no shard owned twice`);
    t.notOk(owner.includes(-1), `${splits} over ${n}: every shard owned`);
    t.ok(Math.max(...sizes) - Math.min(...sizes) <= 1, `${splits} over ${n}: balanced (${sizes})`);
    t.same(
      owner,
      [...owner].sort((a, b) => a - b),
      'blocks are in task order',
    );
    t.same(
      owner.map((_, g) => ownerOf(g, total, n)),
      owner,
      'ownerOf agrees with the ranges',
    );
  }
});
