import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { Dealer } from 'zeromq';
import { Loader, type LoaderOptions } from '../../../src/pipeline/loader/loader.ts';
import { ServeClient, ServeRemoteError, type ServedFrame } from '../../../src/pipeline/serve/client.ts';
import { decodeServerMessage, encodeMessage, type ErrorMessage } from '../../../src/pipeline/serve/protocol.ts';
import { FrameServer, ServeError } from '../../../src/pipeline/serve/server.ts';
import { runShardJob } from '../../../src/pipeline/shard/shard-job.ts';
import { openSynthetic } from '../../../src/pipeline/sources/synthetic.ts';
import { tempDir } from '../../helpers/tmp.ts';
import { epochFrames } from '../../helpers/loader-frames.ts';

const root = new URL('../../../', import.meta.url).pathname;
const dir = tempDir(t, 'smlp-serve-');
const data = join(dir, 'ds');
await runShardJob(openSynthetic({ count: 150, numClasses: 6, width: 8, height: 8, seed: 3 }), {
  out: data,
  res: 8,
  resize: 'max-side',
  encoding: 'raw',
  quality: 90,
  samplesPerShard: 60,
  workers: 1,
  seed: 3,
  split: 'train',
  valFraction: 0,
  command: 't',
});

const WORLD = 2;
const B = 10;
const opts = (rank: number, o: Partial<LoaderOptions> = {}): LoaderOptions => ({
  data,
  batchSize: B,
  mode: 'train',
  seed: 4,
  rank,
  world: WORLD,
  workers: 1,
  slots: 4,
  ...o,
});
// 150 samples / (10 x 2) = 7 steps per epoch per rank.
const STEPS = 7;

/** The frames an in-process loader gives for (rank, epoch): the reference bytes. */
async function reference(rank: number, epoch: number, o: Partial<LoaderOptions> = {}): Promise<Buffer[]> {
  return (await epochFrames(opts(rank, o), epoch)).frames;
}
const ref = new Map<string, Buffer[]>();
for (const r of [0, 1]) for (const e of [0, 1]) ref.set(`${r}:${e}`, await reference(r, e));

type Tap = { teardown(fn: () => unknown): void };
let sockN = 0;
async function startServer(
  t: Tap,
  o: { ranks?: number[]; epochs?: number; window?: number; tcp?: boolean; loader?: Partial<LoaderOptions> } = {},
): Promise<{ server: FrameServer; ep: string }> {
  const sources = await Promise.all((o.ranks ?? [0, 1]).map((r) => Loader.open(opts(r, o.loader))));
  const bind = o.tcp ? 'tcp://127.0.0.1:*' : `ipc://${join(dir, `s${sockN++}.sock`)}`;
  const server = await FrameServer.start({ bind: [bind], sources, window: o.window ?? 2, epochs: o.epochs ?? 2 });
  t.teardown(() => server.close());
  return { server, ep: server.endpoints[0]! };
}

function client(t: Tap, ep: string): ServeClient {
  const c = new ServeClient(ep, { receiveTimeoutMs: 20_000 });
  t.teardown(() => c.close());
  return c;
}

async function take(c: ServeClient, n: number): Promise<ServedFrame[]> {
  const out: ServedFrame[] = [];
  while (out.length < n) {
    const m = await c.next();
    if ('kind' in m) out.push(m);
  }
  return out;
}

t.test("a consumer gets its rank's frames byte for byte, with end_epoch and end", async (t) => {
  const { ep } = await startServer(t);
  const c = client(t, ep);
  const ready = await c.hello({ rank: 1, world: 2, batch_size: B, seed: 4, mode: 'train' });
  t.match(ready, { op: 'ready', rank: 1, world: 2, epoch: 0, step: 0, steps_per_epoch: STEPS, epochs: 2, num_samples: 150, channels: 3, res: 8 });
  const seen: string[] = [];
  const frames: Buffer[] = [];
  for (;;) {
    const m = await c.next();
    if ('kind' in m) {
      seen.push(`${m.info.epoch}:${m.info.step}`);
      frames.push(Buffer.from(m.bytes));
    } else {
      seen.push(m.op);
      if (m.op === 'end') break;
    }
  }
  const steps = (e: number): string[] => Array.from({ length: STEPS }, (_, s) => `${e}:${s}`);
  t.same(seen, [...steps(0), 'end_epoch', ...steps(1), 'end_epoch', 'end']);
  const expected = [...ref.get('1:0')!, ...ref.get('1:1')!];
  t.equal(frames.length, expected.length);
  t.ok(
    frames.every((f, i) => f.equals(expected[i]!)),
    'every frame equals the in-process ring frame',
  );
});

t.test('restart from a position: exactly the frames from there, whatever was in flight', async (t) => {
  const { server, ep } = await startServer(t, { window: 3 });
  const a = new ServeClient(ep, { receiveTimeoutMs: 20_000 });
  await a.hello({ rank: 0, epoch: 0, step: 0 });
  const got = await take(a, 2);
  t.same(
    got.map((f) => f.info.step),
    [0, 1],
  );
  // Die with a window's worth of frames queued or on the wire, unacknowledged.
  a.close();
  const b = client(t, ep);
  const ready = await b.hello({ rank: 0, epoch: 0, step: 2 });
  t.match(ready, { epoch: 0, step: 2 });
  const rest = await take(b, STEPS - 2 + STEPS);
  const expected = [...ref.get('0:0')!.slice(2), ...ref.get('0:1')!];
  t.ok(
    rest.every((f, i) => f.bytes.equals(expected[i]!)),
    'frames (0,2).. (1,6) exactly, none lost or repeated',
  );
  t.ok(server.heldFrames <= 3, 'only the window is held');
});

t.test('a second hello for the same rank supersedes the first; the first gets an error', async (t) => {
  const { ep } = await startServer(t);
  const a = client(t, ep);
  await a.hello({ rank: 0 });
  await take(a, 1);
  const b = client(t, ep);
  const readyB = b.hello({ rank: 0, epoch: 1, step: 3 });
  // Once b is served, a's error is queued: a reads at most the frames in flight, then the error.
  await readyB;
  let err: unknown;
  try {
    for (let i = 0; i < 10; i++) await a.next();
  } catch (e) {
    err = e;
  }
  t.type(err, ServeRemoteError);
  t.equal((err as ServeRemoteError).code, 'superseded');
  const got = await take(b, 2);
  t.ok(got[0]!.bytes.equals(ref.get('0:1')![3]!) && got[1]!.bytes.equals(ref.get('0:1')![4]!));
});

t.test('the same consumer can re-position: stale frames are acked and dropped', async (t) => {
  const { ep } = await startServer(t, { window: 2 });
  const c = client(t, ep);
  await c.hello({ rank: 1 });
  await take(c, 1);
  await c.hello({ rank: 1, epoch: 0, step: 5 });
  const got = await take(c, 3);
  t.same(
    got.map((f) => `${f.info.epoch}:${f.info.step}`),
    ['0:5', '0:6', '1:0'],
  );
  t.ok(got[2]!.bytes.equals(ref.get('1:1')![0]!));
});

t.test('other ranks keep being served when one consumer disconnects', async (t) => {
  const { ep } = await startServer(t);
  const a = new ServeClient(ep, { receiveTimeoutMs: 20_000 });
  const b = client(t, ep);
  await a.hello({ rank: 0 });
  await b.hello({ rank: 1 });
  await take(a, 1);
  a.close();
  const got = await take(b, STEPS);
  t.ok(got.every((f, i) => f.bytes.equals(ref.get('1:0')![i]!)));
});

async function raw(ep: string, body: Buffer): Promise<ErrorMessage> {
  const d = new Dealer({ receiveTimeout: 10_000, linger: 0 });
  d.connect(ep);
  try {
    await d.send(body);
    const [msg] = await d.receive();
    return decodeServerMessage(msg!) as ErrorMessage;
  } finally {
    d.close();
  }
}

t.test('garbage and invalid requests get clear errors; the server keeps serving', async (t) => {
  const { server, ep } = await startServer(t, { ranks: [1] });
  const good = client(t, ep);
  await good.hello({ rank: 1 });
  await take(good, 1);
  const cases: [string, Buffer, string, RegExp][] = [
    ['not msgpack', Buffer.from([0xc1, 0xff, 0x00]), 'bad-request', /not msgpack/],
    ['trailing bytes', Buffer.concat([encodeMessage({ op: 'bye' }), Buffer.from([1])]), 'bad-request', /after its msgpack value/],
    ['not a map', Buffer.from([0x93, 1, 2, 3]), 'bad-request', /must be a msgpack map/],
    ['no op', encodeMessage({ rank: 1 } as never), 'bad-request', /no "op"/],
    ['unknown op', encodeMessage({ op: 'gimme' } as never), 'bad-request', /unknown op "gimme"/],
    ['bad field type', encodeMessage({ op: 'hello', rank: 'one' } as never), 'bad-request', /hello.rank must be a non-negative integer/],
    ['rank not served', encodeMessage({ op: 'hello', rank: 0 }), 'rank-not-served', /rank 0 is not served here \(this server serves ranks 1 of 2\)/],
    ['world mismatch', encodeMessage({ op: 'hello', rank: 1, world: 4, seed: 5 }), 'mismatch', /world 4 \(server: 2\), seed 5 \(server: 4\)/],
    ['step out of range', encodeMessage({ op: 'hello', rank: 1, step: 7 }), 'out-of-range', /step 7 is out of range: an epoch has 7 steps/],
    ['epoch out of range', encodeMessage({ op: 'hello', rank: 1, epoch: 2 }), 'out-of-range', /epoch 2 is not served/],
    ['window too big', encodeMessage({ op: 'hello', rank: 1, window: 3 }), 'out-of-range', /window 3 exceeds/],
    ['ack without session', encodeMessage({ op: 'ack', epoch: 0, step: 0 }), 'no-session', /not in flight/],
  ];
  for (const [name, body, code, message] of cases) {
    const e = await raw(ep, body);
    t.equal(e.op, 'error', name);
    t.equal(e.code, code, name);
    t.match(e.message, message, name);
  }
  // Oversized requests are cut off by zeromq itself (maxMessageSize): no reply, no memory.
  const big = new Dealer({ receiveTimeout: 500, linger: 0 });
  big.connect(ep);
  await big.send(Buffer.alloc(1 << 20));
  await t.rejects(big.receive(), 'no answer to a 1 MiB request');
  big.close();
  const rest = await take(good, STEPS - 1);
  t.ok(
    rest.every((f, i) => f.bytes.equals(ref.get('1:0')![i + 1]!)),
    'the good consumer was not disturbed',
  );
  t.equal(server.sessionCount, 1, 'no state kept for the bad peers');
});

t.test('memory stays bounded: a consumer that stops reading holds at most its window', async (t) => {
  const { server, ep } = await startServer(t, { window: 2, epochs: 3 });
  const slow = client(t, ep);
  await slow.hello({ rank: 0, window: 2 });
  // Many idle peers and hellos that are refused: none of them costs a frame.
  const idle = Array.from({ length: 20 }, () => {
    const d = new Dealer({ linger: 0 });
    d.connect(ep);
    return d;
  });
  await Promise.all(idle.map((d) => d.send(encodeMessage({ op: 'hello', rank: 9 }))));
  for (let i = 0; i < 2400 && server.stats.framesSent < 2; i++) await new Promise((r) => setTimeout(r, 50));
  // The loader has free slots and time to run ahead; the consumer's window stops the sending.
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(server.heldFrames, 2, 'two frames sent and unacknowledged, nothing more');
  t.equal(server.stats.framesSent, 2);
  t.equal(server.sessionCount, 1);
  for (const d of idle) d.close();
  const got = await take(slow, 3);
  t.same(
    got.map((f) => f.info.step),
    [0, 1, 2],
  );
});

t.test('tcp loopback works the same', async (t) => {
  const { ep } = await startServer(t, { tcp: true });
  t.match(ep, /^tcp:\/\/127\.0\.0\.1:\d+$/);
  const c = client(t, ep);
  await c.hello({ rank: 0, epoch: 1, step: 5 });
  const got = await take(c, 2);
  t.ok(got[0]!.bytes.equals(ref.get('0:1')![5]!) && got[1]!.bytes.equals(ref.get('0:1')![6]!));
});

t.test('eval mode serves the short last batch, then end', async (t) => {
  const { ep } = await startServer(t, { ranks: [0], epochs: 1, loader: { mode: 'eval', batchSize: 32 } });
  const c = client(t, ep);
  const ready = await c.hello({ rank: 0, mode: 'eval' });
  t.equal(ready.steps_per_epoch, 3, '75 samples on rank 0 in batches of 32');
  const sizes: number[] = [];
  for await (const f of c.frames()) sizes.push(f.info.shape[0]!);
  t.same(sizes, [32, 32, 11]);
});

t.test('an endpoint that cannot be bound is an error naming it', async (t) => {
  const sources = [await Loader.open(opts(0))];
  const bad = `ipc://${join(dir, 'no-such-dir', 'x.sock')}`;
  const err = await FrameServer.start({ bind: [bad], sources }).catch((e: unknown) => e);
  t.type(err, ServeError);
  t.match((err as Error).message, `cannot bind ${bad}`);
  const { ep } = await startServer(t, { tcp: true, ranks: [1] });
  const err2 = await FrameServer.start({ bind: [ep], sources }).catch((e: unknown) => e);
  t.match((err2 as Error).message, new RegExp(`cannot bind ${ep.replace(/[.*]/g, '\\$&')}: Address already in use`));
  await sources[0]!.close();
});

t.test('close() ends threads and sockets: a process that serves and closes exits by itself', async (t) => {
  const script = `
    import { Loader } from ${JSON.stringify(join(root, 'src/pipeline/loader/loader.ts'))};
    import { FrameServer } from ${JSON.stringify(join(root, 'src/pipeline/serve/server.ts'))};
    import { ServeClient } from ${JSON.stringify(join(root, 'src/pipeline/serve/client.ts'))};
    const loader = await Loader.open({ data: ${JSON.stringify(data)}, batchSize: 10, mode: 'train', workers: 2 });
    const server = await FrameServer.start({ bind: ['tcp://127.0.0.1:*'], sources: [loader] });
    const c = new ServeClient(server.endpoints[0], { receiveTimeoutMs: 10000 });
    await c.hello({});
    await c.next(); await c.next();
    c.close();
    await server.close();
    console.log('closed');
  `;
  // No process.exit: the process ends only if nothing (threads, sockets, timers) is left.
  const file = join(dir, 'serve-and-close.mts');
  writeFileSync(file, script);
  const r = spawnSync(process.execPath, ['--import', 'tsx', file], { encoding: 'utf8', cwd: root, timeout: 180_000 });
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /closed/);
});
