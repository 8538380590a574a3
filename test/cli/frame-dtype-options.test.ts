// --frame-dtype on train, finetune and eval, and the ring-backed feeds honouring it.
import { join } from 'node:path';
import t from 'tap';
import { runShardJob } from '../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../src/pipeline/sources/synthetic.ts';
import { parseEvalArgs } from '../../src/cli/eval-main.ts';
import { openEvalFeed, openTrainFeeds } from '../../src/cli/feeds.ts';
import { PRETRAIN_AUGMENT } from '../../src/pipeline/augment/settings.ts';
import { parseFinetuneArgs } from '../../src/cli/finetune-main.ts';
import { HELP, parseTrainArgs, type TrainFlags } from '../../src/cli/train-flags.ts';
import { tempDir } from '../helpers/tmp.ts';
import { useBackend } from '../model/setup.ts';

const dir = tempDir(t);
const data = join(dir, 'ds');
await runShardJob(openSynthetic({ count: 40, numClasses: 3, width: 8, height: 8, seed: 1 }), {
  out: data,
  res: 8,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: 40,
  workers: 1,
  seed: 1,
  split: 'train',
  valFraction: 0,
  command: 't',
});
const index = join(data, 'index.json');

t.test('parsed by train, finetune and eval; auto by default; other values refused', async (t) => {
  const opts = (argv: string[]) => {
    const r = parseTrainArgs(argv);
    return r.help ? null : r.options;
  };
  t.equal(opts([])!.frameDtype, 'auto');
  t.equal(opts(['--frame-dtype', 'uint8'])!.frameDtype, 'uint8');
  t.equal(opts(['--frame-dtype', 'float32'])!.frameDtype, 'float32');
  t.throws(() => parseTrainArgs(['--frame-dtype', 'int8']), { name: 'UsageError', message: /--frame-dtype: expected one of auto, float32, uint8/ });
  t.match(HELP, /--frame-dtype D\s+auto\|uint8\|float32/);
  const ft = parseFinetuneArgs(['--checkpoint', 'x', '--mode', 'linear', '--frame-dtype', 'uint8']);
  t.equal(ft.help ? null : ft.options.frameDtype, 'uint8');
  const ev = parseEvalArgs(['--checkpoint', 'x', '--data', 'y', '--frame-dtype', 'uint8']);
  t.equal(ev.help ? null : ev.options.frameDtype, 'uint8');
  const evDefault = parseEvalArgs(['--checkpoint', 'x', '--data', 'y']);
  t.equal(evDefault.help ? null : evDefault.options.frameDtype, 'auto');
});

t.test('the feeds: auto follows the active backend (cpu: float32), an explicit uint8 gives uint8 batches', async (t) => {
  await useBackend('cpu');
  const kinds = async (frameDtype: 'auto' | 'uint8' | 'float32') => {
    const parsed = parseTrainArgs([
      '--out',
      join(dir, 'run'),
      '--data',
      index,
      '--val',
      index,
      '--batch-size',
      '8',
      '--workers',
      '1',
      '--frame-dtype',
      frameDtype,
    ]);
    if (parsed.help) throw new Error('unexpected help');
    const o: TrainFlags = parsed.options;
    const feeds = await openTrainFeeds(o, undefined, PRETRAIN_AUGMENT);
    const evalFeed = await openEvalFeed({ data: index, batchSize: 8, res: 8, workers: 1, seed: 0, views: null, frameDtype });
    const got: string[] = [];
    try {
      for (const feed of [feeds.train, feeds.val!, evalFeed]) {
        for await (const b of feed.epoch(0)) {
          got.push(b.images instanceof Uint8Array && b.pixelStats ? 'uint8' : b.images instanceof Float32Array && !b.pixelStats ? 'float32' : 'mixed');
          b.release();
          break;
        }
      }
    } finally {
      await feeds.train.close();
      await feeds.val!.close();
      await evalFeed.close();
    }
    return got;
  };
  t.same(await kinds('auto'), ['float32', 'float32', 'float32']);
  t.same(await kinds('uint8'), ['uint8', 'uint8', 'uint8']);
});
