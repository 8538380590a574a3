/**
 * Typed errors of the batch frame and the shared-memory ring. They live in one file so that
 * frame.ts and ring.ts can both throw them without importing each other.
 */

/**
 * Why a frame was refused:
 * - truncated: the bytes end before the document does (read more and try again);
 * - malformed: not msgpack, or msgpack that is not a frame-shaped map;
 * - invalid: well-formed msgpack whose values break the frame contract (missing key, wrong
 *   dtype, section size not matching the shape), or a header the writer cannot encode;
 * - too-small: the writer's target cannot hold the whole frame.
 */
export type FrameErrorCode = 'truncated' | 'malformed' | 'invalid' | 'too-small';

export class FrameError extends Error {
  readonly code: FrameErrorCode;
  /** Byte offset from the frame start where the problem was found (absent when no position applies). */
  readonly offset?: number;
  constructor(code: FrameErrorCode, message: string, offset?: number) {
    super(offset === undefined ? message : `${message} (at byte ${offset})`);
    this.name = 'FrameError';
    this.code = code;
    if (offset !== undefined) this.offset = offset;
  }
}

/** Raised by every pending and later wait, acquire and publish once the ring is closed. */
export class RingClosedError extends Error {
  constructor(message = 'ring is closed') {
    super(message);
    this.name = 'RingClosedError';
  }
}

/** A synchronous wait (acquireSync/nextSync) gave up after its timeout. */
export class RingTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RingTimeoutError';
  }
}

/**
 * The producer of sequence `seq` gave up on it (Ring.fail). The consumer sees this instead of a
 * view; the slot is already released, so the next call to next() moves on to seq + 1.
 */
export class RingSlotError extends Error {
  readonly seq: number;
  readonly code: number;
  constructor(seq: number, code: number) {
    super(`producer failed sequence ${seq} (code ${code})`);
    this.name = 'RingSlotError';
    this.seq = seq;
    this.code = code;
  }
}

/** A call that breaks the slot protocol (double release, publish of a slot not FILLING, bad buffers). */
export class RingStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RingStateError';
  }
}
