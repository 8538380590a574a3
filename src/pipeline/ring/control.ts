/**
 * Word layout of the ring's control SharedArrayBuffer (an Int32Array). Every thread that
 * attaches reads the same words, so this layout is the ring's cross-thread ABI: bump VERSION
 * when it changes.
 */
export const MAGIC = 0x474e4952; // "RING" in little-endian bytes
export const VERSION = 1;

// Global words.
export const W_MAGIC = 0;
export const W_VERSION = 1;
export const W_SLOTS = 2;
/** slotBytes as two uint32 words: slots may exceed 2 GiB. */
export const W_SLOT_BYTES_LO = 3;
export const W_SLOT_BYTES_HI = 4;
export const W_CLOSED = 5;
/** The next sequence a consumer will take. */
export const W_CURSOR = 6;
/** How many slots were ever released: bounds which sequences may take a slot (see Ring.tryAcquire). */
export const W_RELEASED = 7;
/**
 * Event counters, bumped after every publish (READY_EC) or release (FREE_EC) and on close.
 * A waiter reads the counter, checks its condition, then waits for the counter to change: a
 * change in between makes the wait return at once, so no wakeup is lost.
 */
export const W_READY_EC = 8;
export const W_FREE_EC = 9;
export const W_PUBLISHED = 10;
export const W_FAILED = 11;
export const HEADER_WORDS = 16;

// Per-slot words, at HEADER_WORDS + index * SLOT_WORDS.
export const S_STATE = 0;
export const S_SEQ = 1;
export const S_LEN_LO = 2;
export const S_LEN_HI = 3;
/** Non-zero when the producer gave up on this sequence (Ring.fail). */
export const S_ERROR = 4;
export const SLOT_WORDS = 8;

export const FREE = 0;
export const FILLING = 1;
export const READY = 2;
export const CONSUMING = 3;

export type SlotState = 'free' | 'filling' | 'ready' | 'consuming';
export const STATE_NAMES: readonly SlotState[] = ['free', 'filling', 'ready', 'consuming'];

export function slotWord(index: number, field: number): number {
  return HEADER_WORDS + index * SLOT_WORDS + field;
}

export function controlBytes(slots: number): number {
  return (HEADER_WORDS + slots * SLOT_WORDS) * 4;
}
