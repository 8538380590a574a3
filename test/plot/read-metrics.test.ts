import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { PlotError, parseMetricsText, readRun, uniqueNames } from '../../src/plot/read-metrics.ts';
import { defaultMetrics, describeAvailable, describeMetric, metricFields, resolveMetric, seriesFor, timeline, type MetricRef } from '../../src/plot/series.ts';
import { tempDir } from '../helpers/tmp.ts';

const step = (g: number, extra: Record<string, unknown> = {}): string =>
  JSON.stringify({
    type: 'step',
    epoch: Math.floor((g - 1) / 4),
    step: (g - 1) % 4,
    global_step: g,
    samples: 100,
    loss: 3 - g / 10,
    lr: 0.001,
    images_per_sec: 1000 + g,
    stall_pct: 1,
    ...extra,
  });
const epoch = (e: number, extra: Record<string, unknown> = {}): string =>
  JSON.stringify({
    type: 'epoch',
    epoch: e,
    global_step: 4 * (e + 1),
    train_loss: 2 - e / 10,
    train_top1: 50 + e,
    images_per_sec: 900 + e,
    stall_pct: 2,
    seconds: 1,
    ...extra,
  });

t.test('parseMetricsText skips malformed lines with file:line warnings', async (t) => {
  const text = [step(1), '{"type":"step","loss":', '', '[1,2]', '{"loss": 1}', '42', step(2), '   ', '{"type":"epoch","ep'].join('\n');
  const { records, warnings } = parseMetricsText(text, 'run/metrics.jsonl');
  t.same(
    records.map((r) => [r.line, r.type]),
    [
      [1, 'step'],
      [7, 'step'],
    ],
  );
  t.equal(warnings.length, 5);
  t.match(warnings[0], /^run\/metrics\.jsonl:2: malformed line skipped \(invalid JSON/);
  t.match(warnings[1], /^run\/metrics\.jsonl:4: malformed line skipped \(not a JSON object\)/);
  t.match(warnings[2], /^run\/metrics\.jsonl:5: malformed line skipped \(no "type" field\)/);
  t.match(warnings[3], /^run\/metrics\.jsonl:6: .*not a JSON object/);
  t.match(warnings[4], /^run\/metrics\.jsonl:9: .*invalid JSON/);
  t.same(parseMetricsText('\n\n', 'f'), { records: [], warnings: [] });
  // Windows line ends are fine.
  t.equal(parseMetricsText(`${step(1)}\r\n${step(2)}\r\n`, 'f').records.length, 2);
});

t.test('readRun: folder or file, clear errors, warnings capped', async (t) => {
  const dir = tempDir(t, 'plot-read-');
  const run = join(dir, 'my-run');
  mkdirSync(run);
  t.throws(() => readRun(join(dir, 'absent'), () => {}), { name: 'Error', message: /absent: no such folder/ });
  t.throws(() => readRun(run, () => {}), new PlotError(`${run}: no metrics.jsonl in this folder (expected a training run's --out folder)`));
  writeFileSync(join(run, 'metrics.jsonl'), '');
  t.throws(() => readRun(run, () => {}), /metrics\.jsonl: empty file/);
  writeFileSync(join(run, 'metrics.jsonl'), 'garbage\n{"no":"type"}\n');
  const w1: string[] = [];
  t.throws(() => readRun(run, (m) => w1.push(m)), /metrics\.jsonl: no valid records left \(2 malformed lines skipped\)/);
  t.equal(w1.length, 2);
  writeFileSync(join(run, 'metrics.jsonl'), '{"type":"summary","x":1}\n');
  t.throws(() => readRun(run, () => {}), /no "step" or "epoch" records \(found only: summary\)/);

  writeFileSync(join(run, 'metrics.jsonl'), [step(1), ...Array.from({ length: 8 }, () => 'bad'), step(2)].join('\n'));
  const w2: string[] = [];
  const r = readRun(run, (m) => w2.push(m));
  t.equal(r.name, 'my-run');
  t.equal(r.records.length, 2);
  t.equal(w2.length, 6, '5 warnings and a count of the rest');
  t.match(w2[0], /metrics\.jsonl:2: malformed/);
  t.match(w2[5], /and 3 more malformed lines skipped/);
  // A .jsonl path directly: the run is named after its folder.
  t.equal(readRun(join(run, 'metrics.jsonl'), () => {}).name, 'my-run');
});

t.test('uniqueNames: folder names, paths when they collide', async (t) => {
  t.same(
    uniqueNames([
      { name: 'a', path: 'x/a' },
      { name: 'b', path: 'y/b' },
    ]),
    ['a', 'b'],
  );
  t.same(
    uniqueNames([
      { name: 'run', path: 'x/run/' },
      { name: 'run', path: 'y/run' },
      { name: 'c', path: 'c' },
    ]),
    ['x/run', 'y/run', 'c'],
  );
  t.same(
    uniqueNames([
      { name: 'run', path: 'run' },
      { name: 'run', path: 'run' },
    ]),
    ['run', 'run #2'],
  );
});

function recordsOf(lines: string[]) {
  return { records: parseMetricsText(lines.join('\n'), 'f').records };
}

t.test('series on each x axis; a missing field is a gap', async (t) => {
  const run = recordsOf([
    step(1),
    step(2, { loss: null }),
    step(3),
    step(4),
    epoch(0, { val_top1: 60 }),
    step(5),
    step(6, { loss: undefined }),
    step(7),
    step(8),
    epoch(1),
  ]);
  const tl = timeline(run);
  t.equal(tl.batchesPerEpoch, 4);
  t.same(tl.cumSamples, [100, 200, 300, 400, 500, 600, 700, 800]);
  const loss: MetricRef = { name: 'loss', source: 'step', field: 'loss' };
  const byStep = seriesFor(tl, loss, 'step');
  t.equal(byStep.unplaced, 0);
  t.same(
    byStep.points.map((p) => p.x),
    [1, 2, 3, 4, 5, 6, 7, 8],
  );
  t.same(
    byStep.points.map((p) => p.y),
    [2.9, null, 2.7, 2.6, 2.5, null, 2.3, 2.2],
  );
  // Fractional epochs: epoch + (step + 1) / 4.
  t.same(
    seriesFor(tl, loss, 'epoch').points.map((p) => p.x),
    [0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2],
  );
  t.same(
    seriesFor(tl, loss, 'samples').points.map((p) => p.x),
    [100, 200, 300, 400, 500, 600, 700, 800],
  );
  const val: MetricRef = { name: 'val_top1', source: 'epoch', field: 'val_top1' };
  // Epoch records sit at their global_step, at the images seen then, and at epoch + 1.
  t.same(seriesFor(tl, val, 'step').points, [
    { x: 4, y: 60 },
    { x: 8, y: null },
  ]);
  t.same(seriesFor(tl, val, 'samples').points, [
    { x: 400, y: 60 },
    { x: 800, y: null },
  ]);
  t.same(seriesFor(tl, val, 'epoch').points, [
    { x: 1, y: 60 },
    { x: 2, y: null },
  ]);
});

t.test('missing coordinates: records that cannot be placed are counted, not drawn', async (t) => {
  const run = recordsOf([step(1), JSON.stringify({ type: 'step', loss: 1 }), step(3, { samples: undefined }), epoch(0, { global_step: undefined })]);
  const tl = timeline(run);
  const loss: MetricRef = { name: 'loss', source: 'step', field: 'loss' };
  const s = seriesFor(tl, loss, 'step');
  t.same(
    s.points.map((p) => p.x),
    [1, 3],
  );
  t.equal(s.unplaced, 1);
  // A step without "samples" counts the previous step's batch again.
  t.same(
    seriesFor(tl, loss, 'samples').points.map((p) => p.x),
    [100, 200, 300],
  );
  const tr: MetricRef = { name: 'train_loss', source: 'epoch', field: 'train_loss' };
  t.equal(seriesFor(tl, tr, 'step').unplaced, 1);
  t.same(seriesFor(tl, tr, 'epoch').points, [{ x: 1, y: 2 }]);
});

t.test('resume: records after the checkpoint resumed from are dropped', async (t) => {
  // Crashed after step 6 having checkpointed at 4 (end of epoch 0); resumed from 4.
  const lines = [
    step(1),
    step(2),
    step(3),
    step(4),
    epoch(0),
    step(5),
    step(6),
    JSON.stringify({ type: 'resume', global_step: 4, epoch: 1, step: 0 }),
    step(5, { loss: 9 }),
    step(6, { loss: 8 }),
    step(7),
    step(8),
    epoch(1),
  ];
  const tl = timeline(recordsOf(lines));
  const loss: MetricRef = { name: 'loss', source: 'step', field: 'loss' };
  const s = seriesFor(tl, loss, 'step').points;
  t.same(
    s.map((p) => p.x),
    [1, 2, 3, 4, 5, 6, 7, 8],
  );
  t.same(s.map((p) => p.y).slice(4, 6), [9, 8], 'the resumed values, not the lost ones');
  t.same(tl.cumSamples.at(-1), 800);
  t.same(
    tl.epochs.map((e) => e.data['epoch']),
    [0, 1],
  );
  // A restart without a resume record (global_step going back) is handled the same way.
  const tl2 = timeline(recordsOf([step(1), step(2), step(3), step(2, { loss: 7 }), step(3)]));
  t.same(
    seriesFor(tl2, loss, 'step').points.map((p) => [p.x, p.y]),
    [
      [1, 2.9],
      [2, 7],
      [3, 2.7],
    ],
  );
});

t.test('metric names: fields, kinds, defaults, descriptions', async (t) => {
  const runs = [recordsOf([step(1), epoch(0)]), recordsOf([step(1, { grad_norm: 1 }), epoch(0, { val_top1: 3, val_loss: 1 })])];
  const fields = metricFields(runs);
  t.same(fields.step, ['loss', 'lr', 'images_per_sec', 'stall_pct', 'grad_norm']);
  t.same(fields.epoch, ['train_loss', 'train_top1', 'images_per_sec', 'stall_pct', 'seconds', 'val_top1', 'val_loss']);
  t.same(resolveMetric('loss', fields, 'epoch'), { name: 'loss', source: 'step', field: 'loss' });
  t.same(resolveMetric('val_top1', fields, 'step'), { name: 'val_top1', source: 'epoch', field: 'val_top1' });
  t.same(resolveMetric('images_per_sec', fields, 'step'), { name: 'images_per_sec', source: 'step', field: 'images_per_sec' });
  t.same(resolveMetric('images_per_sec', fields, 'epoch'), { name: 'images_per_sec', source: 'epoch', field: 'images_per_sec' });
  t.same(resolveMetric('epoch.stall_pct', fields, 'step'), { name: 'epoch.stall_pct', source: 'epoch', field: 'stall_pct' });
  t.equal(resolveMetric('step.val_top1', fields, 'step'), undefined);
  t.equal(resolveMetric('accuracy', fields, 'step'), undefined);
  t.equal(resolveMetric('global_step', fields, 'step'), undefined, 'coordinates are not metrics');
  t.same(defaultMetrics(fields), ['loss', 'val_top1', 'images_per_sec']);
  t.same(defaultMetrics(metricFields([runs[0]!])), ['loss', 'train_top1', 'images_per_sec']);
  t.match(
    describeAvailable(fields),
    /^loss, lr, images_per_sec, stall_pct, grad_norm \(per update\); train_loss, .*val_loss \(per epoch\); step\.images_per_sec\/epoch\.images_per_sec/,
  );
  t.equal(describeMetric({ name: 'val_top1', source: 'epoch', field: 'val_top1' }, fields), 'validation top-1 accuracy, %');
  t.equal(describeMetric({ name: 'images_per_sec', source: 'epoch', field: 'images_per_sec' }, fields), 'throughput, images/s (epoch mean)');
  t.equal(describeMetric({ name: 'custom', source: 'step', field: 'custom' }, fields), '');
});
