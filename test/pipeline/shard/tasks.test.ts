import { existsSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { IncompleteJobError, mergeShardJob } from '../../../src/pipeline/shard/merge.ts';
import { LocalOutputStore } from '../../../src/pipeline/shard/output-store.ts';
import { assertMatchesPlan, planRange, planSource, readPlan, writePlan } from '../../../src/pipeline/shard/plan.ts';
import { describeJob, runShardJob, type ShardJobOptions } from '../../../src/pipeline/shard/shard-job.ts';
import { openIdx } from '../../../src/pipeline/sources/idx.ts';
import { openImageNet21k } from '../../../src/pipeline/sources/imagenet21k.ts';
import { openSynthetic } from '../../../src/pipeline/sources/synthetic.ts';
import type { CatalogSource, Item } from '../../../src/pipeline/sources/types.ts';
import { openWebDataset } from '../../../src/pipeline/sources/webdataset-source.ts';
import { colourImage, idxBytes, rawTar, writeFile } from '../../helpers/fixtures.ts';
import { outputFiles } from '../../helpers/output-files.ts';
import { tempDir } from '../../helpers/tmp.ts';

const base = (out: string): ShardJobOptions => ({
  out,
  res: 16,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: 20,
  workers: 1,
  seed: 7,
  split: 'train',
  valFraction: 0.2,
  command: 'test',
  taskSize: 8,
});

// 130 items: 104 train (6 shards, the last of 4) + 26 val (2 shards) = 8 shards.
const synth = (count = 130): CatalogSource => openSynthetic({ count, numClasses: 4, width: 16, height: 16, seed: 7 });

async function reference(t: { teardown(fn: () => void): void }): Promise<Record<string, string>> {
  const ref = tempDir(t);
  await runShardJob(synth(), base(ref));
  return outputFiles(ref);
}

t.test('3 tasks in shuffled order, one interrupted half-way and rerun, then merge: the files of one run, byte for byte', async (t) => {
  const ref = await reference(t);
  const out = tempDir(t);
  // Task 1 owns shards 2..4 of train (60 items): stop it inside its second shard.
  const controller = new AbortController();
  await t.rejects(
    runShardJob(synth(), { ...base(out), task: { index: 1, count: 3 }, signal: controller.signal, onProgress: (p) => p.done >= 24 && controller.abort() }),
    /interrupted/,
  );
  t.ok(existsSync(join(out, '.partial', 'train-000002.tar.json')), 'its first shard was completed');
  t.notOk(existsSync(join(out, '.partial', 'train-000004.tar.json')), 'its last was not');
  const two = await runShardJob(synth(), { ...base(out), task: { index: 2, count: 3 } });
  t.same(two.task, { index: 2, count: 3, shards: 3, of: 8, resumed: 0 });
  t.equal(two.processed, 4 + 26, 'the last train shard (4 items) and both val shards');
  t.same(two.splits, [], 'a task writes no index');
  t.equal((await runShardJob(synth(), { ...base(out), task: { index: 0, count: 3 } })).processed, 40);
  t.notOk(existsSync(join(out, 'index.json')), 'no index before the merge');
  const rerun = await runShardJob(synth(), { ...base(out), task: { index: 1, count: 3 } });
  t.equal(rerun.state, 'resumed');
  t.equal(rerun.task?.resumed, 1);
  t.equal(rerun.processed, 40, 'the rerun redid only its two unfinished shards');
  const merged = await mergeShardJob({ out, command: 'merge' });
  t.equal(merged.state, 'merged');
  t.same(
    merged.splits.map((s) => [s.split, s.shards, s.samples]),
    [
      ['train', 6, 104],
      ['val', 2, 26],
    ],
  );
  t.same(outputFiles(out), ref, 'every file byte-identical (the indexes apart from created_by.command), no job state left');
  t.equal((await mergeShardJob({ out, command: 'merge' })).state, 'complete', 'merging again does nothing');
  t.equal((await runShardJob(synth(), { ...base(out), task: { index: 1, count: 3 } })).state, 'complete', 'a late task finds the job complete');
  t.same(outputFiles(out), ref);
});

t.test('tasks running at the same time agree on the job state without racing', async (t) => {
  const ref = await reference(t);
  const out = tempDir(t);
  await Promise.all([0, 1, 2, 3].map((index) => runShardJob(synth(), { ...base(out), task: { index, count: 4 } })));
  await mergeShardJob({ out, command: 'merge' });
  t.same(outputFiles(out), ref);
});

t.test('merge refuses while shards are missing, naming each and its task; exact once they are there', async (t) => {
  const ref = await reference(t);
  const out = tempDir(t);
  await runShardJob(synth(), { ...base(out), task: { index: 0, count: 3 } });
  await runShardJob(synth(), { ...base(out), task: { index: 2, count: 3 } });
  // A shard whose tar went missing after its record was written does not count either.
  rmSync(join(out, 'val-000001.tar'));
  const err = await mergeShardJob({ out, command: 'merge' }).catch((e: unknown) => e);
  t.type(err, IncompleteJobError);
  const e = err as IncompleteJobError;
  t.same(e.missing, ['train-000002.tar (task 1)', 'train-000003.tar (task 1)', 'train-000004.tar (task 1)', 'val-000001.tar (task 2)']);
  t.same(e.tasks, [1, 2]);
  t.match(e.message, /4 of 8 shards are not complete: train-000002\.tar \(task 1\), .*; run again tasks 1-2 of 3/);
  t.notOk(existsSync(join(out, 'index.json')), 'nothing written');
  await runShardJob(synth(), { ...base(out), task: { index: 1, count: 3 } });
  await runShardJob(synth(), { ...base(out), task: { index: 2, count: 3 } });
  await mergeShardJob({ out, command: 'merge' });
  t.same(outputFiles(out), ref);
});

t.test("a task removes only its own shards' temporaries; the merge removes the rest", async (t) => {
  const out = tempDir(t);
  await runShardJob(synth(), { ...base(out), task: { index: 2, count: 3 } });
  const own = ['train-000000.tar.tmp', '.train-000001.idx.tmp-12-abc', '.partial/.train-000000.tar.json.tmp-9-x1'];
  const others = ['train-000003.tar.tmp', '.val-000001.idx.tmp-12-abc', '.partial/.train-000004.tar.json.tmp-9-x1', '.partial/.job.json.tmp-3-q'];
  for (const f of [...own, ...others]) writeFileSync(join(out, f), 'half');
  await runShardJob(synth(), { ...base(out), task: { index: 0, count: 3 } });
  for (const f of own) t.notOk(existsSync(join(out, f)), `${f} (task 0's) removed`);
  for (const f of others) t.ok(existsSync(join(out, f)), `${f} (another task's, or the job's) left alone`);
  await runShardJob(synth(), { ...base(out), task: { index: 1, count: 3 } });
  await mergeShardJob({ out, command: 'merge' });
  t.same(
    readdirSync(out).filter((f) => f.includes('.tmp')),
    [],
  );
  t.notOk(existsSync(join(out, '.partial')));
});

t.test('tasks of another split or another job in the same folder are refused', async (t) => {
  const out = tempDir(t);
  await runShardJob(synth(), { ...base(out), task: { index: 0, count: 3 } });
  await t.rejects(runShardJob(synth(), { ...base(out), task: { index: 1, count: 2 } }), /split into 3 tasks, not 2/);
  await t.rejects(runShardJob(synth(), { ...base(out), seed: 8, task: { index: 1, count: 3 } }), /unfinished job with other inputs or options/);
  await t.rejects(runShardJob(synth(131), { ...base(out), task: { index: 1, count: 3 } }), /other inputs or options/, 'a changed source listing');
  await t.rejects(runShardJob(synth(), { ...base(out), overwrite: true, task: { index: 1, count: 3 } }), /--overwrite cannot be combined with tasks/);
  await t.rejects(runShardJob(synth(), { ...base(out), task: { index: 3, count: 3 } }), /index must be in 0\.\.count-1/);
  const foreign = tempDir(t);
  writeFileSync(join(foreign, 'other.tar'), 'x');
  await t.rejects(runShardJob(synth(), { ...base(foreign), task: { index: 0, count: 2 } }), /not empty/);
});

t.test('plan: tasks read only their slice of the recorded items, and give the same files as one run', async (t) => {
  const ref = await reference(t);
  const out = tempDir(t);
  let loads = 0;
  const real = synth();
  const counting: CatalogSource = {
    ...real,
    load: (i) => {
      loads++;
      return real.load(i);
    },
  };
  const planned = await writePlan(counting, base(out), { any: 'request' });
  t.same(planned.splits, [
    { name: 'train', count: 104, shards: 6 },
    { name: 'val', count: 26, shards: 2 },
  ]);
  t.ok(planned.recordedItems);
  t.ok(loads > 0, 'the plan step reads the source');
  loads = 0;
  const store = new LocalOutputStore(out);
  const plan = (await readPlan(store))!;
  t.same(plan.file.request, { any: 'request' });
  // Blocks of 8 shards over 3 tasks: [0,2) [2,5) [5,8) -> positions [0,40) [40,100) [100,130).
  t.same(planRange(plan.layout, { index: 0, count: 3 }), [0, 40]);
  t.same(planRange(plan.layout, { index: 1, count: 3 }), [40, 100]);
  t.same(planRange(plan.layout, { index: 2, count: 3 }), [100, 130]);
  t.same(planRange(plan.layout, null), [0, 130]);
  for (const index of [1, 2, 0]) {
    const task = { index, count: 3 };
    const source = await planSource(store, plan, planRange(plan.layout, task));
    assertMatchesPlan(source, base(out), plan);
    await runShardJob(source, { ...base(out), task });
  }
  t.equal(loads, 0, 'no task touched the source');
  const outside = await planSource(store, plan, [40, 100]);
  t.throws(() => outside.load([39]), /outside this task's part of the plan \[40, 100\)/);
  await mergeShardJob({ out, command: 'merge' });
  t.same(outputFiles(out), ref);
});

t.test('a plan is checked against each task: another option or source is an error', async (t) => {
  const out = tempDir(t);
  await writePlan(synth(), base(out), {});
  const plan = (await readPlan(new LocalOutputStore(out)))!;
  t.throws(() => assertMatchesPlan(synth(), { ...base(out), res: 8 }, plan), /make another job than the plan/);
  t.throws(() => assertMatchesPlan(synth(131), base(out), plan), /make another job than the plan/);
  t.doesNotThrow(() => assertMatchesPlan(synth(), { ...base(out), workers: 3 }, plan), 'workers do not shape the output');
  await t.rejects(writePlan(synth(), { ...base(out), seed: 1 }, {}), /other inputs or options/, 'a second plan of another job');
});

t.test('recorded items round-trip exactly: files, tar members (ranges), labels, any slice', async (t) => {
  const root = tempDir(t);
  const png = await colourImage(4, 4, [10, 20, 30], 'png');
  for (let i = 0; i < 7; i++) writeFile(join(root, 'n001', i % 2 ? `sub/é${i}.png` : `${i}.png`), png);
  writeFileSync(join(root, 'n002.tar'), rawTar(Array.from({ length: 9 }, (_, i) => ({ name: `dir/m${i}.png`, data: png }))));
  const source = await openImageNet21k(root);
  t.equal(source.count, 16);
  const o = { ...base(join(root, 'out')), samplesPerShard: 3, valFraction: 0.25 };
  await writePlan(source, o, {});
  const store = new LocalOutputStore(o.out);
  const plan = (await readPlan(store))!;
  const positions = [...plan.layout.splits.map((s) => s.count!)].reduce((a, b) => a + b, 0);
  t.equal(positions, 16);
  // The planned order, as the job computes it, and what the source itself gives there.
  const order = describeJob(source, o).splits.flatMap((s) => [...s.order!]);
  const expected: Item[] = (await source.load(order)).items;
  t.ok(
    expected.some((i) => i.ref.kind === 'range'),
    'tar members are among them',
  );
  for (const [p0, p1] of [
    [0, 16],
    [0, 1],
    [5, 11],
    [15, 16],
    [7, 7],
  ] as [number, number][]) {
    const slice = await planSource(store, plan, [p0, p1]);
    const got = (await slice.load(Array.from({ length: p1 - p0 }, (_, k) => p0 + k))).items;
    t.same(got, expected.slice(p0, p1), `positions [${p0}, ${p1})`);
  }
});

t.test('a stream source (webdataset index) splits into tasks too; shard URLs alone are refused', async (t) => {
  const dir = tempDir(t);
  const first = join(dir, 'first');
  await runShardJob(openSynthetic({ count: 45, numClasses: 3, width: 16, height: 16, seed: 2 }), { ...base(first), valFraction: 0, samplesPerShard: 10 });
  const stream = () => openWebDataset([join(first, 'index.json')]);
  const o = (out: string): ShardJobOptions => ({ ...base(out), valFraction: 0, samplesPerShard: 7, res: 8 });
  const ref = join(dir, 'ref');
  await runShardJob(await stream(), o(ref));
  const out = join(dir, 'tasks');
  for (const index of [1, 0]) await runShardJob(await stream(), { ...o(out), task: { index, count: 2 } });
  await mergeShardJob({ out, command: 'merge' });
  t.same(outputFiles(out), outputFiles(ref));
  const urls = await openWebDataset([join(first, 'train-{000000..000004}.tar')]);
  await t.rejects(runShardJob(urls, { ...o(join(dir, 'u')), task: { index: 0, count: 2 } }), /index \.json/);
});

t.test('a plan with --limit, used by a whole-job run: the files of one run', async (t) => {
  const dir = tempDir(t);
  const o = (out: string): ShardJobOptions => ({ ...base(out), limit: 57 });
  const ref = join(dir, 'ref');
  await runShardJob(synth(), o(ref));
  const out = join(dir, 'planned');
  t.equal((await writePlan(synth(), o(out), {})).items, 57);
  const store = new LocalOutputStore(out);
  const plan = (await readPlan(store))!;
  const summary = await runShardJob(await planSource(store, plan, planRange(plan.layout, null)), o(out));
  t.equal(summary.state, 'resumed', 'the plan had claimed the folder for this job');
  t.same(outputFiles(out), outputFiles(ref));
});

t.test('in-memory pixel sources (idx): the plan records no items; tasks read the source, checked against the plan', async (t) => {
  const dir = tempDir(t);
  const n = 47;
  const pixels = Uint8Array.from({ length: n * 64 }, (_, i) => (i * 31) % 256);
  writeFileSync(join(dir, 'images'), idxBytes([n, 8, 8], pixels));
  writeFileSync(
    join(dir, 'labels'),
    idxBytes(
      [n],
      Uint8Array.from({ length: n }, (_, i) => i % 3),
    ),
  );
  const idx = () => openIdx(join(dir, 'images'), join(dir, 'labels'));
  const o = (out: string): ShardJobOptions => ({ ...base(out), res: 8, samplesPerShard: 9 });
  const ref = join(dir, 'ref');
  await runShardJob(await idx(), o(ref));
  const out = join(dir, 'planned');
  const planned = await writePlan(await idx(), o(out), {});
  t.notOk(planned.recordedItems);
  t.notOk(existsSync(join(out, '.partial', 'plan-items.bin')));
  const plan = (await readPlan(new LocalOutputStore(out)))!;
  t.equal(plan.file.items, null);
  for (const index of [1, 0]) {
    const source = await idx();
    assertMatchesPlan(source, o(out), plan);
    await runShardJob(source, { ...o(out), task: { index, count: 2 } });
  }
  await mergeShardJob({ out, command: 'merge' });
  t.same(outputFiles(out), outputFiles(ref));
});
