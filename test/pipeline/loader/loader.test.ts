import { createServer } from 'node:http';
import { openSync, readFileSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { unpack } from 'msgpackr';
import t from 'tap';
import { Loader, type LoaderOptions } from '../../../src/pipeline/loader/loader.ts';
import { batchIndices } from '../../../src/pipeline/loader/plan.ts';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../../src/pipeline/sources/synthetic.ts';
import { readDataset, readIndex } from '../../helpers/read-shards.ts';
import { tempDir } from '../../helpers/tmp.ts';

const dir = tempDir(t);
const data = join(dir, 'ds');
await runShardJob(openSynthetic({ count: 300, numClasses: 7, width: 16, height: 12, seed: 5 }), {
  out: data,
  res: 16,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: 70,
  workers: 2,
  seed: 5,
  split: 'train',
  valFraction: 0,
  command: 't',
});
const stored = await readDataset(data);
const byKey = new Map(stored.map((s) => [s.key, s]));

const opts = (o: Partial<LoaderOptions> = {}): LoaderOptions => ({ data, batchSize: 64, mode: 'train', seed: 9, workers: 2, taskRows: 16, res: 16, ...o });

interface Seen {
  step: number;
  epoch: number;
  n: number;
  keys: string[];
  labels: number[];
  frame: Buffer;
}

async function collect(loader: Loader, epoch: number, start = 0, delayMs = 0): Promise<Seen[]> {
  const out: Seen[] = [];
  for await (const b of loader.epoch(epoch, start)) {
    out.push({ step: b.step, epoch: b.epoch, n: b.n, keys: b.keys, labels: [...b.labels], frame: Buffer.from(b.frame) });
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
    b.release();
  }
  return out;
}

t.test('train epoch follows the plan: right samples, right labels, each once, in order', async (t) => {
  const loader = await Loader.open(opts());
  t.teardown(() => loader.close());
  t.equal(loader.stepsPerEpoch(), 4, 'floor(300 / 64)');
  const seen = await collect(loader, 0);
  t.same(
    seen.map((s) => s.step),
    [0, 1, 2, 3],
  );
  const keys = seen.flatMap((s) => s.keys);
  t.equal(new Set(keys).size, 256, 'no sample twice in an epoch');
  for (const s of seen) {
    const expected = [...batchIndices(loader.plan, 0, s.step)].map((i) => stored[i]!.key);
    t.same(s.keys, expected, `batch ${s.step} holds the planned samples`);
    t.same(
      s.labels,
      s.keys.map((k) => byKey.get(k)!.label),
      `batch ${s.step} labels`,
    );
  }
});

t.test('eval at stored size is the exact normalised pixels in C,H,W order', async (t) => {
  const loader = await Loader.open(opts({ mode: 'eval', batchSize: 128, res: 16 }));
  t.teardown(() => loader.close());
  const index = readIndex(data);
  const mean = index['mean'] as number[];
  const std = index['std'] as number[];
  let count = 0;
  let worst = 0;
  for await (const b of loader.epoch(0)) {
    // 16x12 images, centre crop 12x12 -> 16x16 resample: check the last, shortest batch instead
    // through a 1:1 crop below; here check shape and labels.
    t.equal(b.images.length, b.n * 3 * 16 * 16);
    count += b.n;
    b.release();
  }
  t.equal(count, 300, 'eval keeps the last partial batch');
  // 1:1 path: a dataset of 16x16 images read at res 16 with a full centre crop is the identity.
  const square = join(dir, 'square');
  await runShardJob(openSynthetic({ count: 20, numClasses: 3, width: 16, height: 16, seed: 2 }), {
    out: square,
    res: 16,
    resize: 'max-side',
    encoding: 'raw',
    quality: 90,
    samplesPerShard: 20,
    workers: 1,
    seed: 2,
    split: 'train',
    valFraction: 0,
    command: 't',
  });
  const px = new Map((await readDataset(square)).map((s) => [s.key, s.pixels!]));
  const sq = readIndex(square);
  const l2 = await Loader.open({ data: square, batchSize: 20, mode: 'eval', workers: 1 });
  t.teardown(() => l2.close());
  for await (const b of l2.epoch(0)) {
    for (let r = 0; r < b.n; r++) {
      const hwc = px.get(b.keys[r]!)!;
      for (let c = 0; c < 3; c++)
        for (let y = 0; y < 16; y++)
          for (let x = 0; x < 16; x++) {
            const want = (hwc[(y * 16 + x) * 3 + c]! - (sq['mean'] as number[])[c]!) / (sq['std'] as number[])[c]!;
            worst = Math.max(worst, Math.abs(b.images[r * 768 + c * 256 + y * 16 + x]! - want));
          }
    }
    b.release();
  }
  t.ok(worst < 1e-4, `max error ${worst}`);
  t.ok(mean.length === 3 && std.length === 3);
});

t.test('deterministic whatever the worker count and task size; another seed differs', async (t) => {
  const a = await Loader.open(opts({ workers: 1, taskRows: 64 }));
  const b = await Loader.open(opts({ workers: 2, taskRows: 7 }));
  const c = await Loader.open(opts({ seed: 10 }));
  t.teardown(async () => {
    await a.close();
    await b.close();
    await c.close();
  });
  const fa = await collect(a, 1);
  const fb = await collect(b, 1);
  t.same(
    fa.map((s) => s.frame.toString('hex')),
    fb.map((s) => s.frame.toString('hex')),
    'byte-identical frames',
  );
  t.notSame((await collect(c, 1))[0]!.keys, fa[0]!.keys);
});

t.test('resume at (epoch, step) yields exactly the tail of an uninterrupted epoch', async (t) => {
  const loader = await Loader.open(opts());
  t.teardown(() => loader.close());
  const full = await collect(loader, 3);
  const resumed = await collect(loader, 3, 2);
  t.same(
    resumed.map((s) => s.frame.toString('hex')),
    full.slice(2).map((s) => s.frame.toString('hex')),
  );
});

t.test('a slow consumer gets every batch, in order, intact (backpressure)', async (t) => {
  const loader = await Loader.open(opts({ slots: 2 }));
  t.teardown(() => loader.close());
  const fast = await collect(loader, 4);
  const slow = await collect(loader, 4, 0, 30);
  t.same(
    slow.map((s) => s.frame.toString('hex')),
    fast.map((s) => s.frame.toString('hex')),
  );
});

t.test('breaking out of an epoch leaves the loader usable', async (t) => {
  const loader = await Loader.open(opts());
  t.teardown(() => loader.close());
  for await (const b of loader.epoch(0)) {
    b.release();
    break;
  }
  const next = await collect(loader, 1);
  t.same(
    next.map((s) => s.step),
    [0, 1, 2, 3],
  );
  t.same(
    next.map((s) => s.epoch),
    [1, 1, 1, 1],
  );
});

t.test('frames decode with an independent msgpack decoder', async (t) => {
  const loader = await Loader.open(opts({ batchSize: 32 }));
  t.teardown(() => loader.close());
  for await (const b of loader.epoch(0)) {
    const doc = unpack(Buffer.from(b.frame)) as Record<string, unknown>;
    t.same(doc['shape'], [32, 3, 16, 16]);
    t.equal(doc['dtype'], 'float32');
    t.equal(doc['epoch'], 0);
    t.same(doc['keys'], b.keys);
    const labels = doc['labels'] as Uint8Array;
    t.same([...new Int32Array(Uint8Array.from(labels).buffer)], [...b.labels]);
    const images = doc['images'] as Uint8Array;
    t.equal(images.length, 32 * 768 * 4);
    t.same(new Float32Array(Uint8Array.from(images.subarray(0, 64)).buffer), b.images.subarray(0, 16));
    t.equal((b.images.byteOffset - b.frame.byteOffset) % 64, 0, 'images 64-byte aligned in the frame');
    b.release();
    break;
  }
});

t.test('a corrupt sample is replaced deterministically, counted and logged with shard and key', async (t) => {
  const bad = join(dir, 'bad');
  await runShardJob(openSynthetic({ count: 100, numClasses: 4, width: 8, height: 8, seed: 1 }), {
    out: bad,
    res: 8,
    resize: 'max-side',
    encoding: 'raw',
    quality: 90,
    samplesPerShard: 100,
    workers: 1,
    seed: 1,
    split: 'train',
    valFraction: 0,
    command: 't',
  });
  // Overwrite sample 000000010's npy magic in place.
  const idx = readFileSync(join(bad, 'train-000000.idx'), 'utf8').split('\n')[11]!.split(' ');
  const npyOffset = Number(idx[idx.indexOf('npy') + 1]);
  const fd = openSync(join(bad, 'train-000000.tar'), 'r+');
  writeSync(fd, Buffer.from('garbage!'), 0, 8, npyOffset);
  closeSync(fd);
  const logged: string[] = [];
  const run = async (): Promise<Seen[]> => {
    const l = await Loader.open({
      data: bad,
      batchSize: 100,
      mode: 'eval',
      workers: 2,
      taskRows: 10,
      onCorrupt: (c) => logged.push(`${c.shard.split('/').pop()}#${c.key}: ${c.reason}`),
    });
    const s = await collect(l, 0);
    t.equal(l.corruptCount, 1);
    await l.close();
    return s;
  };
  const a = await run();
  const b = await run();
  t.equal(a[0]!.n, 100, 'batch keeps its shape');
  t.match(logged[0], /train-000000\.tar#000000010: not a \.npy file/);
  t.same(a[0]!.frame.toString('hex'), b[0]!.frame.toString('hex'), 'replacement is deterministic');
});

t.test('a crashed worker task is re-run: no sample lost or duplicated', async (t) => {
  const ref = await Loader.open(opts());
  const crashy = await Loader.open(opts({ crashOnceAtRow: 32 }));
  t.teardown(async () => {
    await ref.close();
    await crashy.close();
  });
  const want = await collect(ref, 2);
  const got = await collect(crashy, 2);
  t.same(
    got.map((s) => s.frame.toString('hex')),
    want.map((s) => s.frame.toString('hex')),
  );
});

t.test('shards over http are cached locally and read by offset', async (t) => {
  const server = createServer((req, res) => {
    try {
      const body = readFileSync(join(data, req.url!.slice(1)));
      res.writeHead(200, { 'content-length': body.length });
      res.end(body);
    } catch {
      res.writeHead(404);
      res.end();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => server.close());
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}/train-{000000..000004}.tar`;
  const cacheDir = join(dir, 'cache');
  const remote = await Loader.open(opts({ data: url, cacheDir, mode: 'eval' }));
  const local = await Loader.open(opts({ mode: 'eval' }));
  t.teardown(async () => {
    await remote.close();
    await local.close();
  });
  const r = await collect(remote, 0);
  const l = await collect(local, 0);
  t.same(
    r.map((s) => s.labels),
    l.map((s) => s.labels),
  );
  await t.rejects(Loader.open(opts({ data: `http://127.0.0.1:${port}/missing.tar`, cacheDir })), /404/);
});

t.test('bad requests are clear errors', async (t) => {
  await t.rejects(Loader.open(opts({ batchSize: 301 })), /cannot fill one batch of 301/);
  await t.rejects(Loader.open(opts({ data: join(dir, 'nope') })), /nope/);
  const loader = await Loader.open(opts());
  await loader.close();
  await t.rejects(loader.epoch(0).next(), /loader is closed/);
});

t.test('the next epoch produced ahead is exactly what a fresh loader gives; unused, it is dropped', async (t) => {
  const loader = await Loader.open(opts());
  t.teardown(() => loader.close());
  const seq: string[][] = [];
  for (const e of [0, 1, 2]) seq.push((await collect(loader, e)).map((s) => s.frame.toString('hex')));
  // Ask for epoch 0 again (the run made ahead for epoch 3 must be dropped cleanly).
  const again = (await collect(loader, 0)).map((s) => s.frame.toString('hex'));
  for (const e of [0, 1, 2]) {
    const fresh = await Loader.open(opts());
    t.same(
      (await collect(fresh, e)).map((s) => s.frame.toString('hex')),
      seq[e],
      `epoch ${e}`,
    );
    await fresh.close();
  }
  t.same(again, seq[0]);
});

t.test('prefetch: the frames are made before epoch() asks, and are exactly its frames; a wrong guess is dropped', async (t) => {
  const reference = await Loader.open(opts());
  const expected = (await collect(reference, 2, 1)).map((s) => s.frame.toString('hex'));
  const other = (await collect(reference, 0)).map((s) => s.frame.toString('hex'));
  const next = (await collect(reference, 1)).map((s) => s.frame.toString('hex'));
  await reference.close();

  const loader = await Loader.open(opts());
  t.teardown(() => loader.close());
  t.equal(loader.ring.stats().published, 0, 'nothing made at open');
  loader.prefetch(2, 1);
  const t0 = Date.now();
  while (loader.ring.stats().published < loader.ring.slots && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 10));
  t.equal(loader.ring.stats().published, loader.ring.slots, 'the ring filled before any epoch() call');
  t.same(
    (await collect(loader, 2, 1)).map((s) => s.frame.toString('hex')),
    expected,
    'the prefetched epoch',
  );

  const guessed = await Loader.open(opts());
  t.teardown(() => guessed.close());
  guessed.prefetch(2, 1);
  t.same(
    (await collect(guessed, 0)).map((s) => s.frame.toString('hex')),
    other,
    'another epoch asked for: the prefetched frames are dropped',
  );
  // Epoch 1 is already being made ahead: a later hint changes nothing.
  guessed.prefetch(5, 0);
  t.same(
    (await collect(guessed, 1)).map((s) => s.frame.toString('hex')),
    next,
    'a hint after production has started changes nothing',
  );
  t.throws(() => guessed.prefetch(0, 99), /start step 99 out of range: epoch has 4 steps/);
});

t.test('eval order with train transforms: each epoch is another random view of the same images', async (t) => {
  const tta = await Loader.open(opts({ mode: 'eval', transform: 'train', batchSize: 100 }));
  const plain = await Loader.open(opts({ mode: 'eval', batchSize: 100 }));
  t.teardown(async () => {
    await tta.close();
    await plain.close();
  });
  const v0 = await collect(tta, 0);
  const v1 = await collect(tta, 1);
  const p = await collect(plain, 0);
  t.same(
    v0.map((s) => s.keys),
    p.map((s) => s.keys),
    'same images in the same order',
  );
  t.same(
    v1.map((s) => s.keys),
    p.map((s) => s.keys),
  );
  t.not(v0[0]!.frame.toString('hex'), v1[0]!.frame.toString('hex'), 'another view per epoch');
  t.not(v0[0]!.frame.toString('hex'), p[0]!.frame.toString('hex'), 'random crops, not the centre crop');
});
