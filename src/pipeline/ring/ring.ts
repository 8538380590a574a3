/**
 * A ring of N batch slots in one SharedArrayBuffer, with their states in a small control
 * SharedArrayBuffer. Producers (the main thread dispatching worker tasks, or the workers
 * themselves) acquire a FREE slot for a sequence number, fill it in place and publish it READY;
 * the consumer takes slots strictly in sequence order, reads the frame in place and releases it.
 *
 *   FREE --acquire(seq)--> FILLING --publish(len)/fail(code)--> READY --next()--> CONSUMING --release()--> FREE
 *
 * Every transition is an Atomics operation on the control words, so any thread holding the two
 * buffers (Ring.attach, e.g. from workerData) takes part. Waiting is Atomics.waitAsync (main
 * thread) or Atomics.wait (the *Sync variants, for workers); nothing polls.
 */
import {
  CONSUMING,
  FILLING,
  FREE,
  MAGIC,
  READY,
  STATE_NAMES,
  VERSION,
  S_ERROR,
  S_LEN_HI,
  S_LEN_LO,
  S_SEQ,
  S_STATE,
  W_CLOSED,
  W_CURSOR,
  W_FAILED,
  W_FREE_EC,
  W_MAGIC,
  W_PUBLISHED,
  W_READY_EC,
  W_RELEASED,
  W_SLOTS,
  W_SLOT_BYTES_HI,
  W_SLOT_BYTES_LO,
  W_VERSION,
  controlBytes,
  slotWord,
  type SlotState,
} from './control.ts';
import { RingClosedError, RingSlotError, RingStateError, RingTimeoutError } from './errors.ts';
import { waitChange, waitChangeSync } from './wait.ts';

export { RingClosedError, RingSlotError, RingStateError, RingTimeoutError, type SlotState };

/** Slot starts are multiples of this, so 64-byte-aligned frame sections are aligned in memory too. */
export const SLOT_ALIGN = 64;
/** Sequence numbers live in int32 control words. */
export const MAX_SEQ = 0x7fffffff;

export interface RingBuffers {
  readonly data: SharedArrayBuffer;
  readonly control: SharedArrayBuffer;
}

export interface RingOptions {
  /** Number of slots (default 3: one being consumed, one ready, one filling). */
  slots?: number;
  /** Bytes per slot, rounded up to a multiple of 64 (size it with maxFrameBytes). */
  slotBytes: number;
}

/** A slot a producer holds in FILLING state. */
export interface RingWriteSlot {
  readonly index: number;
  readonly seq: number;
  /** The whole slot (slotBytes long); the frame goes at its start. */
  readonly bytes: Uint8Array;
  /** Marks the slot READY with a frame of `length` bytes. */
  publish(length: number): void;
  /** Gives up on this sequence: the consumer gets a RingSlotError for it instead of a frame. */
  fail(code?: number): void;
}

/** A slot the consumer holds in CONSUMING state. */
export interface RingSlotView {
  readonly index: number;
  readonly seq: number;
  /** The published frame, in place: valid until release(). */
  readonly bytes: Uint8Array;
  release(): void;
}

export interface RingStats {
  /** The next sequence the consumer will take. */
  cursor: number;
  published: number;
  released: number;
  failed: number;
  closed: boolean;
  states: SlotState[];
  seqs: number[];
}

function checkCount(name: string, v: number, min: number, max: number): void {
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${v}`);
}

export class Ring {
  readonly buffers: RingBuffers;
  readonly slots: number;
  readonly slotBytes: number;
  /** Shared memory held: slots x slotBytes + the control words. Fixed at creation. */
  readonly bytes: number;
  private readonly ctl: Int32Array;
  private readonly views: Uint8Array[];
  // Async next() calls of this instance run one after another, so that `a = next(); b = next()`
  // gives a the lower sequence.
  private nextChain: Promise<unknown> = Promise.resolve();

  static create(o: RingOptions): Ring {
    const slots = o.slots ?? 3;
    checkCount('slots', slots, 1, 1 << 20);
    checkCount('slotBytes', o.slotBytes, 1, Number.MAX_SAFE_INTEGER);
    const slotBytes = Math.ceil(o.slotBytes / SLOT_ALIGN) * SLOT_ALIGN;
    const control = new SharedArrayBuffer(controlBytes(slots));
    const data = new SharedArrayBuffer(slots * slotBytes);
    const ctl = new Int32Array(control);
    ctl[W_SLOTS] = slots;
    ctl[W_SLOT_BYTES_LO] = slotBytes % 2 ** 32;
    ctl[W_SLOT_BYTES_HI] = Math.floor(slotBytes / 2 ** 32);
    ctl[W_VERSION] = VERSION;
    // Written last: attach() refuses buffers whose magic is not there yet.
    Atomics.store(ctl, W_MAGIC, MAGIC);
    return new Ring({ data, control });
  }

  /** A handle on an existing ring (another thread's, typically passed through workerData). */
  static attach(buffers: RingBuffers): Ring {
    return new Ring(buffers);
  }

  private constructor(buffers: RingBuffers) {
    const { data, control } = buffers;
    if (!(data instanceof SharedArrayBuffer) || !(control instanceof SharedArrayBuffer)) {
      throw new RingStateError('ring buffers must be SharedArrayBuffers');
    }
    if (control.byteLength < controlBytes(0)) throw new RingStateError('control buffer too small');
    const ctl = new Int32Array(control);
    if (Atomics.load(ctl, W_MAGIC) !== MAGIC || ctl[W_VERSION] !== VERSION) {
      throw new RingStateError('control buffer is not a ring of this version');
    }
    const slots = ctl[W_SLOTS]!;
    const slotBytes = (ctl[W_SLOT_BYTES_LO]! >>> 0) + (ctl[W_SLOT_BYTES_HI]! >>> 0) * 2 ** 32;
    if (control.byteLength !== controlBytes(slots) || data.byteLength !== slots * slotBytes) {
      throw new RingStateError('ring buffers do not match their recorded sizes');
    }
    this.buffers = { data, control };
    this.ctl = ctl;
    this.slots = slots;
    this.slotBytes = slotBytes;
    this.bytes = data.byteLength + control.byteLength;
    this.views = [];
    for (let i = 0; i < slots; i++) this.views.push(new Uint8Array(data, i * slotBytes, slotBytes));
  }

  get closed(): boolean {
    return Atomics.load(this.ctl, W_CLOSED) !== 0;
  }

  /** The whole of slot `index` (for a worker told which slot to fill). */
  slotView(index: number): Uint8Array {
    this.checkIndex(index);
    return this.views[index]!;
  }

  /** The sequence slot `index` was acquired for. */
  seqOf(index: number): number {
    this.checkIndex(index);
    return Atomics.load(this.ctl, slotWord(index, S_SEQ));
  }

  stats(): RingStats {
    const c = this.ctl;
    const states: SlotState[] = [];
    const seqs: number[] = [];
    for (let i = 0; i < this.slots; i++) {
      states.push(STATE_NAMES[Atomics.load(c, slotWord(i, S_STATE))]!);
      seqs.push(Atomics.load(c, slotWord(i, S_SEQ)));
    }
    return {
      cursor: Atomics.load(c, W_CURSOR),
      published: Atomics.load(c, W_PUBLISHED),
      released: Atomics.load(c, W_RELEASED),
      failed: Atomics.load(c, W_FAILED),
      closed: this.closed,
      states,
      seqs,
    };
  }

  // ---- producer side ----

  /**
   * Takes a FREE slot for sequence `seq` if one may be taken now, else null.
   *
   * Sequence s may take a slot only while s < released + slots. Each consumed sequence is
   * released once, so at most `slots` unreleased sequences are ever below that bound and each of
   * them can have a slot: a producer running ahead cannot take the slot an earlier sequence
   * needs, which would leave the consumer waiting for that sequence forever.
   */
  tryAcquire(seq: number): RingWriteSlot | null {
    checkCount('seq', seq, 0, MAX_SEQ);
    this.throwIfClosed();
    const c = this.ctl;
    if (seq - Atomics.load(c, W_RELEASED) >= this.slots) return null;
    if (seq < Atomics.load(c, W_CURSOR)) throw new RingStateError(`sequence ${seq} was already consumed`);
    let free = -1;
    for (let i = 0; i < this.slots; i++) {
      const state = Atomics.load(c, slotWord(i, S_STATE));
      if ((state === FILLING || state === READY) && Atomics.load(c, slotWord(i, S_SEQ)) === seq) {
        throw new RingStateError(`sequence ${seq} already holds slot ${i}`);
      }
      if (state === FREE && free < 0) free = i;
    }
    for (let i = free < 0 ? this.slots : free; i < this.slots; i++) {
      if (Atomics.compareExchange(c, slotWord(i, S_STATE), FREE, FILLING) === FREE) {
        // The consumer reads SEQ/LEN only in READY state, which publish() sets after these.
        Atomics.store(c, slotWord(i, S_SEQ), seq);
        Atomics.store(c, slotWord(i, S_ERROR), 0);
        this.storeLength(i, 0);
        return this.writeSlot(i, seq);
      }
    }
    return null;
  }

  /** Waits (without blocking the thread) for a slot for `seq`: this is the backpressure. */
  async acquire(seq: number): Promise<RingWriteSlot> {
    for (;;) {
      const ec = Atomics.load(this.ctl, W_FREE_EC);
      const slot = this.tryAcquire(seq);
      if (slot) return slot;
      await waitChange(this.ctl, W_FREE_EC, ec);
    }
  }

  /** Blocking acquire for worker threads; RingTimeoutError after `timeoutMs`. */
  acquireSync(seq: number, timeoutMs = Infinity): RingWriteSlot {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const ec = Atomics.load(this.ctl, W_FREE_EC);
      const slot = this.tryAcquire(seq);
      if (slot) return slot;
      if (!waitChangeSync(this.ctl, W_FREE_EC, ec, deadline)) {
        throw new RingTimeoutError(`no slot for sequence ${seq} within ${timeoutMs} ms`);
      }
    }
  }

  /** Marks FILLING slot `index` READY with a frame of `length` bytes, and wakes the consumer. */
  publish(index: number, length: number): void {
    this.checkIndex(index);
    checkCount('length', length, 0, this.slotBytes);
    this.throwIfClosed();
    if (Atomics.load(this.ctl, slotWord(index, S_STATE)) !== FILLING) {
      throw new RingStateError(`slot ${index} is not being filled`);
    }
    this.storeLength(index, length);
    this.toReady(index);
    Atomics.add(this.ctl, W_PUBLISHED, 1);
    this.bump(W_READY_EC);
  }

  /** Publishes FILLING slot `index` as failed: the consumer gets RingSlotError(seq, code). */
  fail(index: number, code = 1): void {
    this.checkIndex(index);
    checkCount('code', code, 1, 0x7fffffff);
    this.throwIfClosed();
    if (Atomics.load(this.ctl, slotWord(index, S_STATE)) !== FILLING) {
      throw new RingStateError(`slot ${index} is not being filled`);
    }
    this.storeLength(index, 0);
    Atomics.store(this.ctl, slotWord(index, S_ERROR), code);
    this.toReady(index);
    Atomics.add(this.ctl, W_FAILED, 1);
    this.bump(W_READY_EC);
  }

  // ---- consumer side ----

  /**
   * Takes the slot holding the next sequence if it is READY, else null. Throws RingSlotError
   * (after releasing the slot) when its producer failed, RingClosedError once closed.
   */
  tryNext(): RingSlotView | null {
    this.throwIfClosed();
    const c = this.ctl;
    for (;;) {
      const cursor = Atomics.load(c, W_CURSOR);
      let found = -1;
      for (let i = 0; i < this.slots; i++) {
        if (Atomics.load(c, slotWord(i, S_STATE)) === READY && Atomics.load(c, slotWord(i, S_SEQ)) === cursor) {
          found = i;
          break;
        }
      }
      if (found < 0) return null;
      // Moving the cursor is what claims the sequence: only one consumer can move it from
      // `cursor`, and nobody else takes a READY slot out of that state meanwhile.
      if (Atomics.compareExchange(c, W_CURSOR, cursor, cursor + 1) !== cursor) continue;
      Atomics.store(c, slotWord(found, S_STATE), CONSUMING);
      const error = Atomics.load(c, slotWord(found, S_ERROR));
      if (error !== 0) {
        this.release(found);
        throw new RingSlotError(cursor, error);
      }
      return this.readSlot(found, cursor);
    }
  }

  /** Resolves with the next sequence's slot once READY; rejects with RingClosedError on close. */
  next(): Promise<RingSlotView> {
    const p = this.nextChain.then(() => this.nextInner());
    this.nextChain = p.catch(() => {});
    return p;
  }

  private async nextInner(): Promise<RingSlotView> {
    for (;;) {
      const ec = Atomics.load(this.ctl, W_READY_EC);
      const view = this.tryNext();
      if (view) return view;
      await waitChange(this.ctl, W_READY_EC, ec);
    }
  }

  /** Blocking next() for worker threads; RingTimeoutError after `timeoutMs`. */
  nextSync(timeoutMs = Infinity): RingSlotView {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const ec = Atomics.load(this.ctl, W_READY_EC);
      const view = this.tryNext();
      if (view) return view;
      if (!waitChangeSync(this.ctl, W_READY_EC, ec, deadline)) {
        throw new RingTimeoutError(`no batch within ${timeoutMs} ms`);
      }
    }
  }

  /** Frees CONSUMING slot `index` and wakes waiting producers. Allowed after close (cleanup). */
  release(index: number): void {
    this.checkIndex(index);
    if (Atomics.compareExchange(this.ctl, slotWord(index, S_STATE), CONSUMING, FREE) !== CONSUMING) {
      throw new RingStateError(`slot ${index} is not being consumed`);
    }
    Atomics.add(this.ctl, W_RELEASED, 1);
    this.bump(W_FREE_EC);
  }

  /** Refuses all further work and wakes every waiter, in every thread, to reject. Idempotent. */
  close(): void {
    Atomics.store(this.ctl, W_CLOSED, 1);
    this.bump(W_READY_EC);
    this.bump(W_FREE_EC);
  }

  // ---- internals ----

  private writeSlot(index: number, seq: number): RingWriteSlot {
    // Marked done only once the call succeeds: a refused publish (bad length) can be retried.
    let done = false;
    const check = (): void => {
      if (done) throw new RingStateError(`slot ${index} (sequence ${seq}) was already published`);
    };
    return {
      index,
      seq,
      bytes: this.views[index]!,
      publish: (length: number) => {
        check();
        this.publish(index, length);
        done = true;
      },
      fail: (code = 1) => {
        check();
        this.fail(index, code);
        done = true;
      },
    };
  }

  private readSlot(index: number, seq: number): RingSlotView {
    const c = this.ctl;
    const length = (Atomics.load(c, slotWord(index, S_LEN_LO)) >>> 0) + (Atomics.load(c, slotWord(index, S_LEN_HI)) >>> 0) * 2 ** 32;
    let released = false;
    return {
      index,
      seq,
      bytes: this.views[index]!.subarray(0, length),
      // A flag of its own: by a second call the slot may already belong to a later sequence.
      release: () => {
        if (released) throw new RingStateError(`sequence ${seq} was already released`);
        released = true;
        this.release(index);
      },
    };
  }

  private storeLength(index: number, length: number): void {
    Atomics.store(this.ctl, slotWord(index, S_LEN_LO), length % 2 ** 32);
    Atomics.store(this.ctl, slotWord(index, S_LEN_HI), Math.floor(length / 2 ** 32));
  }

  private toReady(index: number): void {
    if (Atomics.compareExchange(this.ctl, slotWord(index, S_STATE), FILLING, READY) !== FILLING) {
      throw new RingStateError(`slot ${index} is not being filled`);
    }
  }

  private bump(word: number): void {
    Atomics.add(this.ctl, word, 1);
    Atomics.notify(this.ctl, word);
  }

  private throwIfClosed(): void {
    if (Atomics.load(this.ctl, W_CLOSED) !== 0) throw new RingClosedError();
  }

  private checkIndex(index: number): void {
    if (!Number.isInteger(index) || index < 0 || index >= this.slots) {
      throw new RangeError(`slot index ${index} is not in [0, ${this.slots})`);
    }
  }
}
