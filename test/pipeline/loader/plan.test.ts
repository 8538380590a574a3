import t from 'tap';
import { batchIndices, batchRows, checkPlan, stepsPerEpoch, type PlanConfig } from '../../../src/pipeline/loader/plan.ts';

const cfg = (o: Partial<PlanConfig> = {}): PlanConfig => ({ numSamples: 1003, batchSize: 50, seed: 3, rank: 0, world: 1, mode: 'train', ...o });

t.test('train: every sample at most once per epoch, only the partial tail dropped', async (t) => {
  const c = cfg();
  t.equal(stepsPerEpoch(c), 20);
  const seen = new Set<number>();
  for (let s = 0; s < 20; s++) {
    const b = batchIndices(c, 0, s);
    t.equal(b.length, 50);
    for (const i of b) seen.add(i);
  }
  t.equal(seen.size, 1000, 'no sample twice');
  t.ok([...seen].every((i) => i < 1003));
  // Over epochs, the dropped 3 differ, so every sample is seen eventually.
  const dropped = (e: number): number[] => {
    const s = new Set<number>();
    for (let k = 0; k < 20; k++) for (const i of batchIndices(c, e, k)) s.add(i);
    return Array.from({ length: 1003 }, (_, i) => i).filter((i) => !s.has(i));
  };
  t.equal(dropped(0).length, 3);
  t.not(dropped(0).join(), dropped(1).join());
});

t.test('ranks get disjoint, equal parts that together are one epoch of the whole', async (t) => {
  const world = 4;
  const steps = stepsPerEpoch(cfg({ world }));
  t.equal(steps, 5, 'floor(1003 / (50 * 4))');
  const all = new Set<number>();
  for (let r = 0; r < world; r++) {
    t.equal(stepsPerEpoch(cfg({ world, rank: r })), steps, `rank ${r} has as many steps`);
    for (let s = 0; s < steps; s++) for (const i of batchIndices(cfg({ world, rank: r }), 2, s)) all.add(i);
  }
  t.equal(all.size, steps * 50 * world, 'no sample on two ranks');
});

t.test('a pure function: same inputs, same batches; resume from (epoch, step) equals the tail', async (t) => {
  const c = cfg();
  const full = Array.from({ length: 20 }, (_, s) => [...batchIndices(c, 5, s)]);
  // Interleave other epochs' requests to prove there is no hidden state.
  batchIndices(c, 9, 3);
  const resumed = Array.from({ length: 13 }, (_, k) => [...batchIndices(c, 5, k + 7)]);
  t.same(resumed, full.slice(7));
  t.notSame([...batchIndices(c, 6, 0)], full[0], 'another epoch shuffles differently');
  t.notSame([...batchIndices(cfg({ seed: 4 }), 5, 0)], full[0], 'another seed shuffles differently');
});

t.test('eval: sequential, every sample exactly once across ranks, last batch kept', async (t) => {
  const c = cfg({ mode: 'eval', batchSize: 100 });
  t.equal(stepsPerEpoch(c), 11);
  t.equal(batchRows(c, 10), 3);
  t.same([...batchIndices(c, 0, 0)].slice(0, 3), [0, 1, 2]);
  t.same([...batchIndices(c, 0, 10)], [1000, 1001, 1002]);
  const seen: number[] = [];
  for (let r = 0; r < 3; r++) {
    const rc = cfg({ mode: 'eval', batchSize: 100, world: 3, rank: r });
    for (let s = 0; s < stepsPerEpoch(rc); s++) seen.push(...batchIndices(rc, 0, s));
  }
  t.same(
    seen.sort((a, b) => a - b),
    Array.from({ length: 1003 }, (_, i) => i),
  );
});

t.test('bad configurations are clear errors', async (t) => {
  t.throws(() => checkPlan(cfg({ rank: 2, world: 2 })), /rank must be in \[0, 2\)/);
  t.throws(() => checkPlan(cfg({ batchSize: 600, world: 2 })), /cannot fill one batch of 600 on each of 2 ranks/);
  t.throws(() => batchIndices(cfg(), 0, 20), /step 20 out of range/);
});
