/** The batch frame (the pipeline/trainer contract) and the shared-memory ring that carries it. */
export * from './frame.ts';
export * from './ring.ts';
export { FrameError, RingClosedError, RingSlotError, RingStateError, RingTimeoutError } from './errors.ts';
export type { FrameErrorCode } from './errors.ts';
