/**
 * Waiting on a control word without polling: Atomics.waitAsync off the calling thread's event
 * loop, Atomics.wait where blocking is fine (workers).
 */

type WaitAsyncResult = { async: false; value: 'not-equal' | 'timed-out' } | { async: true; value: Promise<'ok' | 'timed-out'> };
type WaitAsync = (ta: Int32Array, index: number, value: number, timeout?: number) => WaitAsyncResult;

// ES2024 lib typing is not in this project's lib setting; Node 20 has the function.
const waitAsyncImpl = (Atomics as unknown as { waitAsync?: WaitAsync }).waitAsync;

// A pending Atomics.waitAsync does not keep Node's event loop alive: the process would exit in
// the middle of `await ring.next()` if nothing else ran. Pending waits hold one ref'd timer
// (it never fires in practice) so they behave like a pending socket read; the last one to
// finish (normally, or through close()) drops it, leaving no handle behind.
let pending = 0;
let keepAlive: ReturnType<typeof setInterval> | undefined;

function hold(): void {
  if (pending++ === 0) keepAlive = setInterval(() => {}, 2 ** 30);
}

function unhold(): void {
  if (--pending === 0 && keepAlive !== undefined) {
    clearInterval(keepAlive);
    keepAlive = undefined;
  }
}

/** Resolves once ctl[index] may differ from `expected` (spurious returns are allowed). */
export async function waitChange(ctl: Int32Array, index: number, expected: number): Promise<void> {
  if (waitAsyncImpl === undefined) throw new Error('Atomics.waitAsync is not available (Node >= 16 required)');
  const r = waitAsyncImpl(ctl, index, expected);
  if (!r.async) return;
  hold();
  try {
    await r.value;
  } finally {
    unhold();
  }
}

/**
 * Blocks until ctl[index] may differ from `expected` or `deadline` (a performance.now() time)
 * passes; returns false on timeout.
 */
export function waitChangeSync(ctl: Int32Array, index: number, expected: number, deadline: number): boolean {
  const left = deadline - performance.now();
  if (left <= 0) return false;
  return Atomics.wait(ctl, index, expected, left === Infinity ? undefined : left) !== 'timed-out' || performance.now() < deadline;
}
