// The ring's slot protocol on one thread: ordering, backpressure, failure, close, misuse.
// "Still pending" is checked by letting the event loop turn a few times, never by a clock.
import t from 'tap';
import { frameLayout, readFrame, writeFrameHeader } from '../../../src/pipeline/ring/frame.ts';
import { Ring, RingClosedError, RingSlotError, RingStateError, RingTimeoutError, type RingWriteSlot } from '../../../src/pipeline/ring/ring.ts';

type Tracked<T> = { state: 'pending' | 'fulfilled' | 'rejected'; value?: T; error?: unknown };

function track<T>(p: Promise<T>): Tracked<T> {
  const s: Tracked<T> = { state: 'pending' };
  p.then(
    (v) => Object.assign(s, { state: 'fulfilled', value: v }),
    (e: unknown) => Object.assign(s, { state: 'rejected', error: e }),
  );
  return s;
}

/** Lets every queued task, microtask and Atomics.waitAsync wakeup run. */
async function turns(n = 5): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((r) => setImmediate(r));
}

const SLOT = 4096;

/** Writes a small frame whose step is `seq` and publishes it. */
function fill(slot: RingWriteSlot): void {
  const h = { epoch: 0, step: slot.seq, rank: 0, world: 1, n: 2, channels: 1, height: 2, width: 2, keys: ['a', 'b'] };
  const l = writeFrameHeader(slot.bytes, h);
  new Int32Array(slot.bytes.buffer, slot.bytes.byteOffset + l.labelsOffset, 2).set([slot.seq, -slot.seq]);
  new Float32Array(slot.bytes.buffer, slot.bytes.byteOffset + l.imagesOffset, 8).fill(slot.seq + 0.5);
  slot.publish(l.totalBytes);
}

t.test('create and attach: sizes, alignment, shared state', (t) => {
  const ring = Ring.create({ slots: 3, slotBytes: 1000 });
  t.equal(ring.slots, 3);
  t.equal(ring.slotBytes, 1024, 'rounded up to 64');
  t.equal(ring.bytes, 3 * 1024 + ring.buffers.control.byteLength);
  t.ok(ring.buffers.control.byteLength < 512, 'control words are small');
  for (let i = 0; i < 3; i++) t.equal(ring.slotView(i).byteOffset % 64, 0, `slot ${i} aligned`);
  const other = Ring.attach(ring.buffers);
  t.equal(other.slots, 3);
  t.equal(other.slotBytes, 1024);
  const w = ring.tryAcquire(0)!;
  t.same(other.stats().states, ['filling', 'free', 'free'], 'state is shared');
  w.bytes[0] = 99;
  t.equal(other.slotView(w.index)[0], 99, 'memory is shared');
  t.throws(() => Ring.attach({ data: new SharedArrayBuffer(8), control: new SharedArrayBuffer(256) }), RingStateError);
  t.throws(() => Ring.attach({ data: ring.buffers.data, control: Ring.create({ slots: 2, slotBytes: 1024 }).buffers.control }), RingStateError);
  t.throws(() => Ring.create({ slots: 0, slotBytes: 64 }), RangeError);
  t.end();
});

t.test('batches come out in sequence order whatever order they complete in', async (t) => {
  const ring = Ring.create({ slots: 3, slotBytes: SLOT });
  const s0 = await ring.acquire(0);
  const s1 = await ring.acquire(1);
  const s2 = await ring.acquire(2);
  t.not(s0.index, s1.index);
  fill(s2);
  fill(s1);
  const first = track(ring.next());
  await turns();
  t.equal(first.state, 'pending', 'sequences 1 and 2 are READY but 0 is not: nothing is delivered');
  fill(s0);
  const second = await ring.next(); // queued behind `first`
  t.equal(first.state, 'fulfilled');
  t.equal(first.value!.seq, 0);
  t.equal(readFrame(first.value!.bytes).step, 0);
  t.equal(second.seq, 1, 'the second next() call gets the second sequence');
  t.same([...readFrame(second.bytes).labels], [1, -1]);
  first.value!.release();
  second.release();
  const v2 = await ring.next();
  t.equal(v2.seq, 2);
  t.equal(readFrame(v2.bytes).images[7], 2.5);
  t.equal(
    v2.bytes.length,
    frameLayout({ epoch: 0, step: 2, rank: 0, world: 1, n: 2, channels: 1, height: 2, width: 2, keys: ['a', 'b'] }).totalBytes,
    'the view is exactly the published frame',
  );
  v2.release();
  t.same(ring.stats(), { cursor: 3, published: 3, released: 3, failed: 0, closed: false, states: ['free', 'free', 'free'], seqs: ring.stats().seqs });
});

t.test('backpressure: a producer waits while every slot is taken, until one is released', async (t) => {
  const ring = Ring.create({ slots: 2, slotBytes: SLOT });
  fill(await ring.acquire(0));
  fill(await ring.acquire(1));
  const third = track(ring.acquire(2));
  await turns();
  t.equal(third.state, 'pending', 'both slots READY: acquire waits');
  const v0 = await ring.next();
  await turns();
  t.equal(third.state, 'pending', 'taking a batch does not free its slot');
  v0.release();
  await turns();
  t.equal(third.state, 'fulfilled', 'release wakes the producer');
  t.equal(third.value!.index, v0.index, 'it gets the released slot');
  t.equal(third.value!.seq, 2);
  t.equal(ring.tryAcquire(3), null, 'still full');
  t.throws(() => ring.acquireSync(3, 5), RingTimeoutError, 'blocking acquire times out when full');
});

t.test('a producer running ahead cannot take the slot an earlier sequence needs', async (t) => {
  const ring = Ring.create({ slots: 3, slotBytes: SLOT });
  t.equal(ring.tryAcquire(3), null, 'sequence 3 waits for a release although every slot is free');
  const ahead = track(ring.acquire(3));
  const s2 = ring.tryAcquire(2);
  const s0 = ring.tryAcquire(0);
  const s1 = ring.tryAcquire(1);
  t.ok(s0 && s1 && s2, 'sequences 0..2 always find a slot, in any order');
  await turns();
  t.equal(ahead.state, 'pending');
  fill(s0!);
  const v0 = await ring.next();
  fill(s1!);
  await turns();
  t.equal(ahead.state, 'pending', 'a batch held by the consumer still counts against the window');
  const v1 = await ring.next();
  t.equal(v1.seq, 1, 'the consumer can hold one batch and take the next');
  v0.release();
  await turns();
  t.equal(ahead.state, 'fulfilled', 'sequence 3 gets the slot of released sequence 0');
  t.equal(ahead.value!.index, v0.index);
  v1.release();
  fill(s2!);
  fill(ahead.value!);
  t.same([(await ring.next()).seq, (await ring.next()).seq], [2, 3]);
});

t.test('a failed sequence reaches the consumer as RingSlotError, then the ring moves on', async (t) => {
  const ring = Ring.create({ slots: 2, slotBytes: SLOT });
  const s0 = await ring.acquire(0);
  fill(await ring.acquire(1));
  s0.fail(7);
  const err = await ring.next().then(
    () => null,
    (e: unknown) => e,
  );
  t.type(err, RingSlotError);
  t.equal((err as RingSlotError).seq, 0);
  t.equal((err as RingSlotError).code, 7);
  const v1 = await ring.next();
  t.equal(v1.seq, 1);
  v1.release();
  t.match(ring.stats(), { failed: 1, released: 2, published: 1, cursor: 2 });
  t.equal((await ring.acquire(2)).seq, 2, 'the failed slot was freed');
});

t.test('the synchronous consumer', (t) => {
  const ring = Ring.create({ slots: 2, slotBytes: SLOT });
  t.throws(() => ring.nextSync(5), RingTimeoutError, 'nothing published');
  t.equal(ring.tryNext(), null);
  fill(ring.acquireSync(0));
  const v = ring.nextSync(1000);
  t.equal(v.seq, 0);
  t.equal(readFrame(v.bytes).step, 0);
  v.release();
  t.end();
});

t.test('protocol misuse is refused', async (t) => {
  const ring = Ring.create({ slots: 2, slotBytes: SLOT });
  const s0 = await ring.acquire(0);
  t.throws(() => ring.tryAcquire(0), RingStateError, 'one slot per sequence');
  t.throws(() => s0.publish(SLOT + 1), RangeError, 'a frame longer than the slot');
  fill(s0);
  t.throws(() => s0.publish(10), RingStateError, 'publishing twice');
  t.throws(() => ring.publish(1, 10), RingStateError, 'publishing a slot nobody acquired');
  t.throws(() => ring.release(s0.index), RingStateError, 'releasing a slot nobody consumes');
  const v = await ring.next();
  v.release();
  t.throws(() => v.release(), RingStateError, 'releasing twice');
  t.throws(() => ring.tryAcquire(0), RingStateError, 'a consumed sequence');
  t.throws(() => ring.tryAcquire(-1), RangeError);
  t.throws(() => ring.slotView(2), RangeError);
});

t.test('close rejects pending waits and refuses new work', async (t) => {
  const ring = Ring.create({ slots: 1, slotBytes: SLOT });
  const other = Ring.attach(ring.buffers);
  const waiting = track(ring.next());
  const waitingOther = track(other.next());
  const held = await ring.acquire(0);
  const blocked = track(ring.acquire(1));
  await turns();
  t.equal(waiting.state, 'pending');
  t.equal(blocked.state, 'pending');
  other.close(); // through another handle: the state is in shared memory
  await turns();
  t.equal(waiting.state, 'rejected');
  t.type(waiting.error, RingClosedError);
  t.type(waitingOther.error, RingClosedError);
  t.type(blocked.error, RingClosedError);
  t.ok(ring.closed);
  await t.rejects(ring.next(), RingClosedError);
  await t.rejects(ring.acquire(1), RingClosedError);
  t.throws(() => ring.nextSync(), RingClosedError);
  t.throws(() => held.publish(10), RingClosedError, 'work in flight cannot be published');
  ring.close();
  t.ok(ring.closed, 'close is idempotent');
});

t.test('memory does not grow with use', async (t) => {
  const ring = Ring.create({ slots: 3, slotBytes: SLOT });
  const before = ring.bytes;
  for (let seq = 0; seq < 500; seq++) {
    fill(await ring.acquire(seq));
    const v = await ring.next();
    if (v.seq !== seq) t.fail(`got ${v.seq}, expected ${seq}`);
    v.release();
  }
  t.equal(ring.bytes, before);
  t.equal(ring.buffers.data.byteLength, 3 * SLOT);
  t.match(ring.stats(), { cursor: 500, published: 500, released: 500 });
});
