import t from 'tap';
import { LauncherEnvError, assertSingleProcess, parseRanks, resolveRank } from '../../src/shared/launcher-env.ts';

t.test('launchers: torchrun, Slurm, Kubernetes Indexed Jobs, in that order', async (t) => {
  t.match(resolveRank({}, {}), { rank: 0, world: 1, source: 'default' });
  t.match(resolveRank({}, { RANK: '3', WORLD_SIZE: '8', LOCAL_RANK: '3' }), { rank: 3, world: 8, source: 'torchrun', detail: 'RANK=3 WORLD_SIZE=8' });
  t.match(resolveRank({}, { SLURM_PROCID: '5', SLURM_NTASKS: '16' }), { rank: 5, world: 16, source: 'slurm' });
  t.match(resolveRank({}, { JOB_COMPLETION_INDEX: '2', WORLD_SIZE: '4' }), { rank: 2, world: 4, source: 'kubernetes' });
  // torchrun started by srun: torchrun's per-process rank wins over the srun task id.
  t.match(resolveRank({}, { RANK: '9', WORLD_SIZE: '16', SLURM_PROCID: '1', SLURM_NTASKS: '2' }), { rank: 9, world: 16, source: 'torchrun' });
});

t.test('flags win, each over its own half', async (t) => {
  t.match(resolveRank({ rank: '1', world: '2' }, { RANK: '3', WORLD_SIZE: '8' }), { rank: 1, world: 2, source: 'flags' });
  t.match(resolveRank({ world: 4 }, { JOB_COMPLETION_INDEX: '3' }), { rank: 3, world: 4, source: 'kubernetes' });
  t.match(resolveRank({ rank: '0' }, {}), { rank: 0, world: 1 });
  t.match(resolveRank({ world: '3' }, {}), { rank: 0, world: 3, source: 'flags' });
});

t.test('malformed or inconsistent values are errors naming the variable', async (t) => {
  const bad = (f: Parameters<typeof resolveRank>[0], env: Record<string, string>, variable: string, msg: RegExp): void => {
    const e = (() => {
      try {
        resolveRank(f, env);
      } catch (err) {
        return err;
      }
      return null;
    })();
    t.type(e, LauncherEnvError, msg.source);
    t.equal((e as LauncherEnvError).variable, variable);
    t.match((e as Error).message, msg);
  };
  bad({}, { RANK: 'x', WORLD_SIZE: '2' }, 'RANK', /RANK must be an integer >= 0, got "x"/);
  bad({}, { RANK: '1' }, 'WORLD_SIZE', /RANK is set \(1\) but WORLD_SIZE is not/);
  bad({}, { JOB_COMPLETION_INDEX: '1' }, 'WORLD_SIZE', /pass --world N \(the Job's completions\) or set WORLD_SIZE/);
  bad({}, { SLURM_PROCID: '4', SLURM_NTASKS: '4' }, 'SLURM_PROCID', /rank 4 is not below the world size 4/);
  bad({}, { RANK: '0', WORLD_SIZE: '0' }, 'WORLD_SIZE', /WORLD_SIZE must be an integer >= 1/);
  bad({ rank: '2' }, {}, '--world', /--rank 2 needs --world/);
  bad({ rank: '-1', world: '2' }, {}, '--rank', /--rank must be an integer >= 0/);
  bad({ rank: '2', world: '2' }, {}, '--rank', /rank 2 is not below the world size 2/);
});

t.test('rank lists', async (t) => {
  t.same(parseRanks('all', 3), [0, 1, 2]);
  t.same(parseRanks('2', 3), [2]);
  t.same(parseRanks('4-5,0, 2', 8), [0, 2, 4, 5]);
  t.same(parseRanks('1,1-2', 4), [1, 2]);
  t.throws(() => parseRanks('3', 3), /--ranks 3 is not below the world size 3/);
  t.throws(() => parseRanks('2-1', 3), /range 2-1 is empty/);
  t.throws(() => parseRanks('a', 3), /--ranks must be "all" or a list/);
});

t.test('single-process commands refuse a multi-process launch', async (t) => {
  t.doesNotThrow(() => assertSingleProcess('train', {}));
  t.doesNotThrow(() => assertSingleProcess('train', { RANK: '0', WORLD_SIZE: '1' }));
  t.throws(
    () => assertSingleProcess('train', { RANK: '1', WORLD_SIZE: '2' }),
    /train runs in one process .* world size 2 \(RANK=1 WORLD_SIZE=2\).*examples\/torch-ddp/,
  );
  t.throws(() => assertSingleProcess('train', { SLURM_PROCID: '0', SLURM_NTASKS: '4' }), /world size 4/);
});
