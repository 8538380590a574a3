import t from 'tap';
import { learningRate } from '../../src/train/schedule.ts';

t.test('constant ("none"), the paper setting', async (t) => {
  for (const s of [0, 1, 99]) t.equal(learningRate({ base: 5e-5, schedule: 'none', warmupSteps: 0, totalSteps: 100 }, s), 5e-5);
});

t.test('linear warm-up then constant', async (t) => {
  const spec = { base: 1, schedule: 'none' as const, warmupSteps: 4, totalSteps: 100 };
  t.same(
    [0, 1, 2, 3, 4, 50].map((s) => learningRate(spec, s)),
    [0.25, 0.5, 0.75, 1, 1, 1],
  );
});

t.test('cosine from base to minLr over the run, after warm-up', async (t) => {
  const spec = { base: 1, schedule: 'cosine' as const, warmupSteps: 0, totalSteps: 10 };
  t.equal(learningRate(spec, 0), 1);
  t.ok(Math.abs(learningRate(spec, 5) - 0.5) < 1e-12, 'half way: (1 + cos(pi/2)) / 2');
  t.ok(Math.abs(learningRate(spec, 10)) < 1e-12, 'end: 0');
  t.equal(learningRate(spec, 20), 0, 'clamped past the end');
  const w = { base: 2, schedule: 'cosine' as const, warmupSteps: 2, totalSteps: 6, minLr: 0.5 };
  t.same(
    [0, 1].map((s) => learningRate(w, s)),
    [1, 2],
    'warm-up',
  );
  // after warm-up: progress (s - 2) / 4
  t.ok(Math.abs(learningRate(w, 4) - (0.5 + 1.5 * 0.5)) < 1e-12, 'midpoint of the cosine part');
  t.ok(Math.abs(learningRate(w, 3) - (0.5 + 1.5 * 0.5 * (1 + Math.cos(Math.PI / 4)))) < 1e-12);
});
