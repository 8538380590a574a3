// Small in-memory training setups shared by the trainer tests.
import type { Batch, DataFeed } from '../../src/shared/data-feed.ts';
import { MemoryFeed, syntheticArrays } from '../../src/train/memory-feed.ts';
import { microBatchSize, trainConfig, type TrainConfig } from '../../src/train/config.ts';

export const SHAPE = { channels: 3, res: 4, numClasses: 5 };
const TRAIN = syntheticArrays(96, SHAPE.channels, SHAPE.res, SHAPE.numClasses, 1);
const VAL = syntheticArrays(40, SHAPE.channels, SHAPE.res, SHAPE.numClasses, 2);

export interface FeedHooks {
  onBatch?: (b: Batch) => void;
  /** Every epoch() and prefetch() call on the training feed, in order. */
  calls?: string[];
}

export function feedsFor(o: TrainConfig, hooks: FeedHooks = {}): { train: DataFeed; val: DataFeed } {
  const train = new MemoryFeed({ ...TRAIN, ...SHAPE, batchSize: microBatchSize(o), shuffle: true, seed: o.seed });
  const watched: DataFeed = {
    info: train.info,
    stepsPerEpoch: () => train.stepsPerEpoch(),
    close: () => train.close(),
    prefetch(e, start) {
      hooks.calls?.push(`prefetch ${e} ${start}`);
    },
    epoch(e, start) {
      hooks.calls?.push(`epoch ${e} ${start ?? 0}`);
      const inner = train.epoch(e, start);
      return {
        async *[Symbol.asyncIterator]() {
          for await (const b of inner) {
            hooks.onBatch?.(b);
            yield b;
          }
        },
      };
    },
  };
  return { train: watched, val: new MemoryFeed({ ...VAL, ...SHAPE, batchSize: 16 }) };
}

/** A small but complete configuration: Lion, MixUp with a seeded permutation, smoothing, clipping, cosine. */
export function smallOptions(out: string, over: Partial<TrainConfig> = {}): TrainConfig {
  return trainConfig({
    out,
    arch: 'B_1-Wi_16',
    epochs: 3,
    batchSize: 16,
    lr: 1e-3,
    weightDecay: 1e-2,
    smoothing: 0.1,
    mixup: 0.8,
    mixupPartner: 'permute',
    clip: 1,
    schedule: 'cosine',
    warmup: 2,
    checkpointEvery: 0,
    seed: 3,
    ...over,
  });
}
