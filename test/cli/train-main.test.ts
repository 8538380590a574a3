// runTrainCli: help, dry-run, usage errors, a full run with in-memory feeds, and Ctrl-C (SIGINT
// delivered through an injected emitter) followed by --resume.
import { EventEmitter } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { EXIT } from '../../src/cli/command.ts';
import { progressPrinter, runTrainCli, type MakeFeeds, type TrainIo } from '../../src/cli/train-main.ts';
import type { TrainFlags } from '../../src/cli/train-flags.ts';
import { tempDir } from '../helpers/tmp.ts';
import { feedsFor } from '../train/helpers.ts';

function io(): TrainIo & { out: string[]; err: string[]; signals: EventEmitter & Pick<NodeJS.Process, 'on' | 'off'> } {
  const out: string[] = [];
  const err: string[] = [];
  const signals = new EventEmitter() as EventEmitter & Pick<NodeJS.Process, 'on' | 'off'>;
  return { out, err, signals, stdout: (s) => void out.push(s), stderr: (s) => void err.push(s), progress: null };
}

const noFeeds: MakeFeeds = async () => {
  throw new Error('feeds must not be built here');
};

t.test('--help prints usage and exits 0', async (t) => {
  const c = io();
  t.equal(await runTrainCli(['--help'], noFeeds, c), EXIT.ok);
  t.match(c.out.join(''), /^Usage: train --data/);
});

t.test('--dry-run: params and forward+backward FLOPs per sample, no data needed', async (t) => {
  const c = io();
  t.equal(await runTrainCli(['--dry-run'], noFeeds, c), EXIT.ok);
  const r = JSON.parse(c.out.join('')) as Record<string, number>;
  t.match(r, { arch: 'B_12-Wi_1024', params: 124_843_998, res: 64, channels: 3, num_classes: 11230, input_dim: 12288 });
  t.equal(r['flops_per_sample'], 6 * r['forward_macs']!);
  const d = io();
  await runTrainCli(['--dry-run', '--arch', 'B_6-Wi_256', '--res', '32', '--channels', '3', '--num-classes', '10'], noFeeds, d);
  const s = JSON.parse(d.out.join('')) as Record<string, number>;
  t.equal(s['params'], 3072 * 256 + 256 + 6 * (256 * 1024 * 2 + 1024 + 256 + 512) + 256 * 10 + 10);
});

t.test('--dry-run with --data reads the shape from the feed', async (t) => {
  const c = io();
  let closed = 0;
  const make: MakeFeeds = async (o) => {
    const f = feedsFor(o);
    return { train: { ...f.train, info: f.train.info, stepsPerEpoch: () => 1, epoch: f.train.epoch, close: async () => void closed++ } };
  };
  t.equal(await runTrainCli(['--dry-run', '--data', 'x.json', '--arch', 'S_2-Wi_8'], make, c), EXIT.ok);
  t.match(JSON.parse(c.out.join('')), { res: 4, channels: 3, num_classes: 5, params: 48 * 8 + 8 + 8 * 8 + 8 + 16 + 8 * 5 + 5 });
  t.equal(closed, 1, 'feeds closed');
});

t.test('usage errors exit 2 with a message', async (t) => {
  const c = io();
  t.equal(await runTrainCli(['--optimizer', 'adam'], noFeeds, c), EXIT.usage);
  t.match(c.err.join(''), /--optimizer: expected one of/);
  const d = io();
  t.equal(await runTrainCli([], noFeeds, d), EXIT.usage);
  t.match(d.err.join(''), /--data is required/);
});

const ARGS = ['--data', 'mem', '--arch', 'B_1-Wi_16', '--batch-size', '16', '--epochs', '2', '--lr', '1e-3', '--backend', 'wasm', '--quiet'];

t.test('a full run: backend report, summary line, exit 0; failures exit 1 with the reason', async (t) => {
  const out = tempDir(t);
  const c = io();
  const code = await runTrainCli([...ARGS, '--out', out], async (o: TrainFlags) => feedsFor(o), c);
  t.equal(code, EXIT.ok, c.err.join(''));
  const err = c.err.join('');
  t.match(err, /^backend: wasm/, 'the backend report comes first');
  t.match(err, /epoch 2\/2: train loss/);
  t.match(err, /throughput: [\d.]+ images\/s/);
  const summary = JSON.parse(c.out.join('')) as Record<string, unknown>;
  t.match(summary, { type: 'summary', stoppedBy: 'completed', epochsCompleted: 2, backend: 'wasm', backend_selection: { backend: 'wasm' } });
  const again = io();
  t.equal(await runTrainCli([...ARGS, '--out', out], async (o) => feedsFor(o), again), EXIT.usage, 'refuses to overwrite a run');
  const bad = io();
  t.equal(await runTrainCli([...ARGS, '--out', tempDir(t), '--num-classes', '7'], async (o) => feedsFor(o), bad), EXIT.failure);
  t.match(bad.err.join(''), /TrainError: --num-classes: 7 given, the data has 5/);
});

t.test('Ctrl-C: checkpoint, exit 130; --resume finishes the run', async (t) => {
  const out = tempDir(t);
  const c = io();
  let n = 0;
  // The third batch is requested (prefetched) as the second starts computing: Ctrl-C then lets
  // update 2 finish and stops before the third batch is trained.
  const code = await runTrainCli([...ARGS, '--out', out], async (o) => feedsFor(o, { onBatch: () => ++n === 3 && c.signals.emit('SIGINT') }), c);
  t.equal(code, EXIT.interrupted);
  t.match(c.err.join(''), /interrupt: finishing this batch, writing a checkpoint/);
  t.match(JSON.parse(c.out.join('')), { stoppedBy: 'interrupted', globalStep: 2 });
  t.ok(existsSync(join(out, 'checkpoints', 'step-000000002')));
  t.equal(c.signals.listenerCount('SIGINT'), 0, 'handler removed');
  const r = io();
  t.equal(await runTrainCli([...ARGS, '--resume', out], async (o) => feedsFor(o), r), EXIT.ok, r.err.join(''));
  t.match(r.err.join(''), /resumed from .*step-000000002: epoch 0, batch 2, update 2/);
  t.match(JSON.parse(r.out.join('')), { stoppedBy: 'completed', globalStep: 12 });
});

t.test('one writer per --out: a second train into a folder being written is refused (exit 75)', async (t) => {
  const out = join(tempDir(t), 'run');
  const first = io();
  let second: ReturnType<typeof io> | null = null;
  let secondCode: number | null = null;
  // While the first run trains its first batch, a second run into the same folder starts.
  const code = await runTrainCli(
    [...ARGS, '--out', out],
    async (o) =>
      feedsFor(o, {
        onBatch: () => {
          if (second) return;
          second = io();
          void runTrainCli([...ARGS, '--out', out], async (p) => feedsFor(p), second).then((c) => (secondCode = c));
        },
      }),
    first,
  );
  await new Promise((r) => setImmediate(r));
  t.equal(code, EXIT.ok, first.err.join(''));
  t.equal(secondCode, EXIT.locked);
  t.match(second!.err.join(''), new RegExp(`train: ${out} is being written by another process \\(pid ${process.pid}`));
  t.notOk(existsSync(`${out}.lock`), 'the lock is released at the end');
  const metrics = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n');
  t.equal(metrics.filter((l) => l.includes('"type":"summary"')).length, 1, 'one run wrote the folder');
});

t.test('the progress line of each epoch counts its rate from the epoch start', async (t) => {
  const events: string[] = [];
  const stream = { isTTY: true, write: (s: string) => events.push(s) } as unknown as NodeJS.WriteStream;
  const print = progressPrinter(stream, false)!;
  print({ kind: 'epoch-start', epoch: 0 });
  // A timer can fire early by performance.now() (libuv's loop time is cached): wait by the clock.
  const started = performance.now();
  while (performance.now() - started < 50) await new Promise((r) => setTimeout(r, 10));
  print({ kind: 'update', epoch: 0, epochs: 1, done: 10, total: 100, loss: 1, lr: 1e-3, stallPct: 0 });
  print({ kind: 'epoch-end', epoch: 0 });
  // 10 images in >= 50 ms: at most 200 images/s (a line created at the update would say millions).
  const rate = Number(/ (\d[\d,]*) img\/s/.exec(events.join(''))![1]!.replace(/,/g, ''));
  t.ok(rate <= 200, `${rate} img/s`);
  t.equal(progressPrinter(stream, true), undefined, '--quiet: no printer');
});
