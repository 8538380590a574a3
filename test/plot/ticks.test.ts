import t from 'tap';
import { formatTicks, niceStep, niceTicks, stepDecimals } from '../../src/plot/ticks.ts';

t.test('niceStep: span / target rounded to 1, 2 or 5 x 10^k', async (t) => {
  // raw = span / target; f = raw / 10^floor(log10 raw); f < 1.5 -> 1, < 3 -> 2, < 7 -> 5, else 10.
  t.equal(niceStep(80, 5), 20); // raw 16: f 1.6 -> 2
  t.equal(niceStep(1.85, 5), 0.5); // raw 0.37: f 3.7 -> 5
  t.equal(niceStep(2541, 5), 500); // raw 508.2: f 5.08 -> 5
  t.equal(niceStep(100, 5), 20); // raw 20: f 2 -> 2
  t.equal(niceStep(70, 5), 10); // raw 14: f 1.4 -> 1
  t.equal(niceStep(8, 1), 10); // raw 8: f 8 -> 10
  t.throws(() => niceStep(0, 5), RangeError);
});

t.test('niceTicks: domain widened to whole steps, exact tick values', async (t) => {
  t.same(niceTicks(0, 80), { lo: 0, hi: 80, step: 20, values: [0, 20, 40, 60, 80] });
  t.same(niceTicks(0.5, 2.35), { lo: 0.5, hi: 2.5, step: 0.5, values: [0.5, 1, 1.5, 2, 2.5] });
  // 1359..3900: step 500, floor(1359/500) = 2 -> 1000, ceil(3900/500) = 8 -> 4000.
  t.same(niceTicks(1359, 3900).values, [1000, 1500, 2000, 2500, 3000, 3500, 4000]);
  // -0.3..0.7: span 1, raw 0.2 -> step 0.2; floor(-1.5) = -2 -> -0.4, ceil(3.5) = 4 -> 0.8.
  t.same(niceTicks(-0.3, 0.7).values, [-0.4, -0.2, 0, 0.2, 0.4, 0.6, 0.8]);
  // No binary noise: 3 * 0.1 is 0.30000000000000004 in floating point.
  const tenths = niceTicks(0.1, 0.3, { target: 2 });
  t.same(tenths.values, [0.1, 0.2, 0.3]);
  t.ok(Math.abs(tenths.step - 0.1) < 1e-15);
  // Data exactly on a tick is not widened by a step.
  t.same(niceTicks(20, 100).values, [20, 40, 60, 80, 100]);
  // Reversed arguments are fine.
  t.same(niceTicks(80, 0).values, [0, 20, 40, 60, 80]);
});

t.test('niceTicks: constant data, zero, integer axes', async (t) => {
  // A constant 3e-4 gets [0, 3e-4]: raw 6e-5 -> step 5e-5, 7 ticks.
  const lr = niceTicks(3e-4, 3e-4);
  t.equal(lr.values.length, 7);
  t.equal(lr.lo, 0);
  t.equal(lr.hi, 3e-4);
  t.equal(lr.values[3], 1.5e-4);
  t.same(niceTicks(0, 0).values, [0, 0.2, 0.4, 0.6, 0.8, 1]);
  t.same(niceTicks(-2, -2).values, [-2, -1.5, -1, -0.5, 0]);
  // Four epochs with room for 10 ticks would step by 0.5; integer axes step by at least 1.
  t.same(niceTicks(1, 4, { target: 10 }).values, [1, 1.5, 2, 2.5, 3, 3.5, 4]);
  t.same(niceTicks(1, 4, { target: 10, integer: true }).values, [1, 2, 3, 4]);
  t.throws(() => niceTicks(0, Number.NaN), RangeError);
});

t.test('formatTicks: one notation per axis', async (t) => {
  t.equal(stepDecimals(0.5), 1);
  t.equal(stepDecimals(0.02), 2);
  t.equal(stepDecimals(10), 0);
  t.same(formatTicks([0.5, 1, 1.5, 2], 0.5), ['0.5', '1.0', '1.5', '2.0']);
  t.same(formatTicks([1000, 1500, 2000], 500), ['1000', '1500', '2000']);
  t.same(formatTicks([0, 10000, 20000, 30000, 40000], 10000), ['0', '10k', '20k', '30k', '40k']);
  t.same(formatTicks([0, 5000, 10000, 15000], 5000), ['0', '5k', '10k', '15k']);
  t.same(formatTicks([9000, 9500, 10000, 10500], 500), ['9.0k', '9.5k', '10.0k', '10.5k']);
  t.same(formatTicks([0, 5e5, 1e6, 1.5e6, 2e6, 2.5e6], 5e5), ['0', '0.5M', '1.0M', '1.5M', '2.0M', '2.5M']);
  t.same(formatTicks([-0.4, -0.2, 0, 0.2], 0.2), ['-0.4', '-0.2', '0.0', '0.2']);
  t.same(formatTicks([0, 5e-5, 1e-4, 1.5e-4, 3e-4], 5e-5), ['0', '5e-5', '1.0e-4', '1.5e-4', '3.0e-4']);
  t.same(formatTicks([0, 0], 1), ['0', '0']);
});
