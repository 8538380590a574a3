// The ring across threads: producers and consumers in worker_threads holding only the two
// SharedArrayBuffers, close() waking waiters in other threads, and process exit.
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { maxFrameBytes, readFrame, writeFrameHeader } from '../../../src/pipeline/ring/frame.ts';
import { Ring, RingClosedError, type RingBuffers } from '../../../src/pipeline/ring/ring.ts';

const RING_URL = new URL('../../../src/pipeline/ring/ring.ts', import.meta.url).href;
const FRAME_URL = new URL('../../../src/pipeline/ring/frame.ts', import.meta.url).href;
const TSX_API = import.meta.resolve('tsx/esm/api');

const N = 32;
const C = 3;
const H = 8;
const W = 8;
const SLOT_BYTES = maxFrameBytes({ n: N, channels: C, height: H, width: W, maxKeyBytes: 16, meta: { fnv: 0xffffffff } });

// Shared by the worker code (as source) and the checks here: what sequence `seq` carries.
const CONTENT_JS = String.raw`
function fnv1a(bytes) {
  let h = 0x811c9dc5;
  for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i], 0x01000193) >>> 0;
  return h;
}
function pixel(seq, j) { return ((seq * 131 + j * 7) % 997) - 400; }
function label(seq, i) { return seq * 1000 + i; }
function writeBatch(slot, writeFrameHeader, scratch) {
  const seq = slot.seq;
  for (let j = 0; j < scratch.length; j++) scratch[j] = pixel(seq, j);
  const keys = Array.from({ length: ${N} }, (_, i) => seq + '/' + i);
  const h = { epoch: 1, step: seq, rank: 0, world: 1, n: ${N}, channels: ${C}, height: ${H}, width: ${W}, keys,
    meta: { fnv: fnv1a(new Uint8Array(scratch.buffer)) } };
  const l = writeFrameHeader(slot.bytes, h);
  const labels = new Int32Array(slot.bytes.buffer, slot.bytes.byteOffset + l.labelsOffset, ${N});
  for (let i = 0; i < ${N}; i++) labels[i] = label(seq, i);
  new Float32Array(slot.bytes.buffer, slot.bytes.byteOffset + l.imagesOffset, scratch.length).set(scratch);
  slot.publish(l.totalBytes);
}
// Returns a description of what is wrong with the frame of sequence seq, or null.
function checkBatch(seq, f) {
  if (f.step !== seq) return 'step ' + f.step + ' in sequence ' + seq;
  if (fnv1a(new Uint8Array(f.images.buffer, f.images.byteOffset, f.images.byteLength)) !== f.meta.fnv) return 'image checksum';
  for (let i = 0; i < ${N}; i++) if (f.labels[i] !== label(seq, i) || f.keys[i] !== seq + '/' + i) return 'label/key ' + i;
  for (const j of [0, 1, 100, f.images.length - 1]) if (f.images[j] !== pixel(seq, j)) return 'pixel ' + j;
  return null;
}
`;
type CheckBatch = (seq: number, f: ReturnType<typeof readFrame>) => string | null;
type WriteBatch = (slot: unknown, write: typeof writeFrameHeader, scratch: Float32Array) => void;
const content = new Function(`${CONTENT_JS}; return { checkBatch, writeBatch };`)() as { checkBatch: CheckBatch; writeBatch: WriteBatch };

/** A worker running `body` (plain JS) with Ring, writeFrameHeader, readFrame and CONTENT_JS in scope. */
function worker(body: string, buffers: RingBuffers, data: Record<string, unknown> = {}): Worker {
  // Eval workers get no loader hooks from the parent: register tsx before importing the .ts files.
  const code = `
${CONTENT_JS}
(async () => {
  const { workerData, parentPort } = await import('node:worker_threads');
  try {
    (await import(workerData.tsx)).register();
    const { Ring } = await import(workerData.ringUrl);
    const { writeFrameHeader, readFrame } = await import(workerData.frameUrl);
    const ring = Ring.attach(workerData.buffers);
    ${body}
  } catch (e) {
    parentPort.postMessage({ error: e && e.name, stack: String((e && e.stack) || e) });
  }
})();
`;
  return new Worker(code, { eval: true, workerData: { ...data, buffers, tsx: TSX_API, ringUrl: RING_URL, frameUrl: FRAME_URL } });
}

/**
 * Collects a worker's messages until it exits. With `ring`, a failing worker closes it, so the
 * main thread's pending wait rejects instead of hanging the test.
 */
async function finished(w: Worker, ring?: Ring): Promise<Array<Record<string, unknown>>> {
  const messages: Array<Record<string, unknown>> = [];
  w.on('message', (m: Record<string, unknown>) => {
    messages.push(m);
    if ('error' in m) ring?.close();
  });
  const [code] = (await once(w, 'exit')) as [number];
  if (code !== 0) messages.push({ error: `exit code ${code}` });
  return messages;
}

const PRODUCER = `
  const scratch = new Float32Array(${N * C * H * W});
  for (let seq = workerData.first; seq < workerData.count; seq += workerData.stride) {
    // Uneven work so that the two producers finish their batches out of order.
    let x = 0;
    for (let k = (seq * 7919) % 20000; k > 0; k--) x += k;
    writeBatch(ring.acquireSync(seq, 120_000), writeFrameHeader, scratch);
  }
  parentPort.postMessage({ done: workerData.first });
`;

async function twoProducers(slowConsumer: boolean) {
  const COUNT = 200;
  const ring = Ring.create({ slots: 3, slotBytes: SLOT_BYTES });
  const producers = [0, 1].map((first) => finished(worker(PRODUCER, ring.buffers, { first, stride: 2, count: COUNT }), ring));
  const seqs: number[] = [];
  const problems: string[] = [];
  try {
    for (let k = 0; k < COUNT; k++) {
      const v = await ring.next();
      seqs.push(v.seq);
      const problem = content.checkBatch(v.seq, readFrame(v.bytes));
      if (problem) problems.push(`${v.seq}: ${problem}`);
      // A slow consumer gives the producers time to fill every slot and block on the ring.
      if (slowConsumer) await new Promise<void>((r) => setTimeout(r, 1));
      v.release();
    }
  } catch (e) {
    throw new Error(`consumer stopped after ${seqs.length} batches (${String(e)}); producers: ${JSON.stringify(await Promise.all(producers))}`);
  }
  const messages = (await Promise.all(producers)).flat();
  return { COUNT, messages, seqs, problems, stats: ring.stats() };
}

for (const slow of [false, true]) {
  t.test(`two worker producers, ${slow ? 'slow' : 'fast'} consumer on the main thread: 200 batches through 3 slots`, async (t) => {
    const r = await twoProducers(slow);
    t.same(r.messages, [{ done: 0 }, { done: 1 }], 'both producers finished without error');
    t.same(
      r.seqs,
      Array.from({ length: r.COUNT }, (_, i) => i),
      'every sequence exactly once, in order',
    );
    t.same(r.problems, [], 'contents intact');
    t.match(r.stats, { cursor: r.COUNT, published: r.COUNT, released: r.COUNT, failed: 0, states: ['free', 'free', 'free'] });
  });
}

t.test('main-thread producer, blocking consumer in a worker', async (t) => {
  const COUNT = 200;
  const ring = Ring.create({ slots: 3, slotBytes: SLOT_BYTES });
  const consumer = finished(
    worker(
      `
    const seqs = [];
    const problems = [];
    for (let k = 0; k < workerData.count; k++) {
      const v = ring.nextSync(120_000);
      seqs.push(v.seq);
      const problem = checkBatch(v.seq, readFrame(v.bytes));
      if (problem) problems.push(v.seq + ': ' + problem);
      v.release();
    }
    parentPort.postMessage({ seqs, problems });
  `,
      ring.buffers,
      { count: COUNT },
    ),
    ring,
  );
  const scratch = new Float32Array(N * C * H * W);
  for (let seq = 0; seq < COUNT; seq++) content.writeBatch(await ring.acquire(seq), writeFrameHeader, scratch);
  const [msg, ...rest] = await consumer;
  t.same(rest, []);
  t.same(
    msg!.seqs,
    Array.from({ length: COUNT }, (_, i) => i),
  );
  t.same(msg!.problems, []);
});

t.test('close() in one thread wakes waiters blocked in others', async (t) => {
  const ring = Ring.create({ slots: 1, slotBytes: SLOT_BYTES });
  // Ring full, so a producer blocks in acquireSync; nothing published, so a consumer blocks in nextSync.
  ring.tryAcquire(0);
  const blocked = [
    finished(worker(`parentPort.postMessage({ ready: 1 }); try { ring.nextSync(); } catch (e) { parentPort.postMessage({ caught: e.name }); }`, ring.buffers)),
    finished(
      worker(`parentPort.postMessage({ ready: 1 }); try { ring.acquireSync(1); } catch (e) { parentPort.postMessage({ caught: e.name }); }`, ring.buffers),
    ),
  ];
  const mainWait = ring.next();
  // A worker closes the ring: the main thread's Atomics.waitAsync wakes too.
  const closer = finished(worker(`ring.close(); parentPort.postMessage({ closed: true });`, ring.buffers));
  await t.rejects(mainWait, RingClosedError);
  t.same(await closer, [{ closed: true }]);
  for (const b of blocked) t.same(await b, [{ ready: 1 }, { caught: 'RingClosedError' }]);
});

function runChild(script: string): { stdout: string; status: number } {
  const full = `const { Ring } = await import(${JSON.stringify(RING_URL)});\n${script}`;
  try {
    const stdout = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', full], {
      encoding: 'utf8',
      timeout: 30_000, // a guard against a hang, not a measurement
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return { stdout, status: 0 };
  } catch (e) {
    const err = e as { stdout?: string; status?: number | null; signal?: string | null; stderr?: string };
    return { stdout: `${err.stdout ?? ''}${err.stderr ?? ''}[signal ${err.signal}]`, status: err.status ?? -1 };
  }
}

t.test('close() leaves no handle behind: the process exits', (t) => {
  const r = runChild(`
    const ring = Ring.create({ slotBytes: 64 });
    ring.next().catch((e) => console.log(e.name));
    ring.acquire(5).catch((e) => console.log(e.name));
    setImmediate(() => ring.close());
  `);
  t.equal(r.status, 0, r.stdout);
  t.equal(r.stdout, 'RingClosedError\nRingClosedError\n');
  t.end();
});

t.test('a pending next() keeps the process alive until its batch arrives', (t) => {
  // The only producer is an unref'd worker: without the ring's own hold on the event loop, the
  // process would exit before the batch arrives and print nothing.
  const r = runChild(`
    const { Worker } = await import('node:worker_threads');
    const ring = Ring.create({ slotBytes: 64 });
    ring.next().then((v) => { console.log('got', v.seq, v.bytes[0]); v.release(); ring.close(); });
    const w = new Worker(\`
      (async () => {
        const { workerData } = await import('node:worker_threads');
        (await import(workerData.tsx)).register();
        const { Ring } = await import(workerData.ringUrl);
        const slot = Ring.attach(workerData.buffers).acquireSync(0);
        slot.bytes[0] = 42;
        slot.publish(1);
      })();
    \`, { eval: true, workerData: { buffers: ring.buffers, tsx: ${JSON.stringify(TSX_API)}, ringUrl: ${JSON.stringify(RING_URL)} } });
    w.unref();
  `);
  t.equal(r.status, 0, r.stdout);
  t.equal(r.stdout, 'got 0 42\n');
  t.end();
});
