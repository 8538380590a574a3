/**
 * The frame-serving protocol: small msgpack maps between a consumer (a ZeroMQ DEALER) and the
 * server (a ROUTER), plus the batch frames themselves, sent as the bytes they are in the ring.
 * Every message is one ZeroMQ message part holding one msgpack map; control messages carry an
 * "op" key, frames never do (they have "images"). README "Serving frames" is the specification
 * for implementers in other languages; this module is its TypeScript side.
 *
 *   consumer -> server   {op: "hello", rank, world?, epoch?, step?, window?, batch_size?, seed?, mode?}
 *                        {op: "ack", epoch, step}          after receiving every frame
 *                        {op: "bye"}                        end the session (optional)
 *   server -> consumer   {op: "ready", ...}                 answer to hello
 *                        <frame>                            at most `window` unacknowledged
 *                        {op: "end_epoch", epoch, steps}    after an epoch's last frame
 *                        {op: "end", epoch}                 after the last epoch served
 *                        {op: "error", code, message}
 */
import { C1, pack, unpackMultiple } from 'msgpackr';
import { MsgpackReader, BinRef, type Value } from '../ring/msgpack.ts';

/** Protocol version, sent in "ready"; bumped on incompatible changes. */
export const PROTOCOL_VERSION = 1;

/** Requests are tiny; the server's socket refuses (disconnects) anything bigger. */
export const MAX_REQUEST_BYTES = 4096;

export type ErrorCode =
  /** Not msgpack, not a map, unknown op, or a field of the wrong type: the session is dropped. */
  | 'bad-request'
  /** hello names a rank this server does not serve. */
  | 'rank-not-served'
  /** hello's world/batch_size/seed/mode differ from the server's. */
  | 'mismatch'
  /** hello's (epoch, step) or window is outside what the server offers. */
  | 'out-of-range'
  /** An ack or bye from a peer without a session (or an ack of a frame not sent to it). */
  | 'no-session'
  /** A newer hello for the same rank took over; this peer's session is over. */
  | 'superseded'
  /** The loader failed to produce a frame (e.g. a shard became unreadable). */
  | 'loader-failed'
  /** The server is stopping. */
  | 'shutdown';

export type Mode = 'train' | 'eval';

export interface HelloRequest {
  op: 'hello';
  rank?: number;
  world?: number;
  epoch?: number;
  step?: number;
  window?: number;
  batch_size?: number;
  seed?: number;
  mode?: Mode;
}

export interface AckRequest {
  op: 'ack';
  epoch: number;
  step: number;
}

export interface ByeRequest {
  op: 'bye';
}

export type Request = HelloRequest | AckRequest | ByeRequest;

export interface ReadyMessage {
  op: 'ready';
  protocol: number;
  rank: number;
  world: number;
  /** Where this session's frames start. */
  epoch: number;
  step: number;
  window: number;
  batch_size: number;
  seed: number;
  mode: Mode;
  steps_per_epoch: number;
  first_epoch: number;
  /** Epochs end before this one; null: no end. */
  epochs: number | null;
  num_samples: number;
  num_classes: number;
  channels: number;
  res: number;
  /** Upper bound on a frame's size in bytes (to size receive buffers). */
  max_frame_bytes: number;
}

export interface EndEpochMessage {
  op: 'end_epoch';
  epoch: number;
  steps: number;
}

export interface EndMessage {
  op: 'end';
  epoch: number;
}

export interface ErrorMessage {
  op: 'error';
  code: ErrorCode;
  message: string;
}

export type ControlMessage = ReadyMessage | EndEpochMessage | EndMessage | ErrorMessage;

export class ProtocolError extends Error {
  override name = 'ProtocolError';
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/**
 * A fresh Buffer per message: zeromq sends Buffers over 128 bytes without copying and reads
 * them later, while msgpackr's pack() returns a view of a buffer it reuses.
 */
export function encodeMessage(m: Request | ControlMessage): Buffer {
  return Buffer.from(pack(m));
}

/**
 * A small message decoded by msgpackr (control messages and requests are never on the hot path;
 * frames are only peeked at, below). unpackMultiple stops after the first value and says where
 * it ended, so trailing bytes are reported with their count.
 */
function decodeMap(bytes: Uint8Array, what: string): Record<string, Value> {
  let v: unknown;
  let end = -1;
  try {
    unpackMultiple(bytes, (value: unknown, _start?: number, stop?: number) => {
      v = value;
      end = stop ?? -1;
      return false;
    });
  } catch (e) {
    throw new ProtocolError('bad-request', `${what} is not msgpack: ${(e as Error).message}`);
  }
  if (end < 0) throw new ProtocolError('bad-request', `${what} is empty`);
  // msgpackr reads the never-used byte 0xc1 as a marker value instead of failing.
  if (v === C1) throw new ProtocolError('bad-request', `${what} is not msgpack: it starts with 0xc1, a byte msgpack never uses`);
  if (end !== bytes.length) throw new ProtocolError('bad-request', `${what} has ${bytes.length - end} bytes after its msgpack value`);
  if (typeof v !== 'object' || v === null || Array.isArray(v) || ArrayBuffer.isView(v) || v instanceof Map) {
    throw new ProtocolError('bad-request', `${what} must be a msgpack map`);
  }
  return v as Record<string, Value>;
}

function optUint(m: Record<string, Value>, key: string, op: string): number | undefined {
  const v = m[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new ProtocolError('bad-request', `${op}.${key} must be a non-negative integer, got ${describe(v)}`);
  }
  return v;
}

function reqUint(m: Record<string, Value>, key: string, op: string): number {
  const v = optUint(m, key, op);
  if (v === undefined) throw new ProtocolError('bad-request', `${op} needs ${key}`);
  return v;
}

function describe(v: Value): string {
  if (v instanceof BinRef || ArrayBuffer.isView(v)) return `bin(${(v as { length: number }).length})`;
  if (typeof v === 'bigint') return String(v);
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 40 ? `${s.slice(0, 40)}...` : s;
}

/** Parses and checks a consumer's request; ProtocolError('bad-request') says what is wrong. */
export function decodeRequest(bytes: Uint8Array): Request {
  const m = decodeMap(bytes, 'request');
  const op = m.op;
  if (op === 'hello') {
    const hello: HelloRequest = { op };
    for (const k of ['rank', 'world', 'epoch', 'step', 'window', 'batch_size', 'seed'] as const) {
      const v = optUint(m, k, 'hello');
      if (v !== undefined) hello[k] = v;
    }
    if (hello.world === 0) throw new ProtocolError('bad-request', 'hello.world must be at least 1');
    if (hello.window === 0) throw new ProtocolError('bad-request', 'hello.window must be at least 1');
    const mode = m.mode;
    if (mode !== undefined && mode !== null) {
      if (mode !== 'train' && mode !== 'eval') throw new ProtocolError('bad-request', `hello.mode must be "train" or "eval", got ${describe(mode)}`);
      hello.mode = mode;
    }
    return hello;
  }
  if (op === 'ack') return { op, epoch: reqUint(m, 'epoch', 'ack'), step: reqUint(m, 'step', 'ack') };
  if (op === 'bye') return { op };
  throw new ProtocolError('bad-request', op === undefined ? 'request has no "op"' : `unknown op ${describe(op)} (expected hello, ack or bye)`);
}

/**
 * What a server message is: a control message (decoded) or a frame (left as bytes; its header
 * is read by peekFrame). A frame is recognised by having no "op" entry.
 */
export function decodeServerMessage(bytes: Uint8Array): ControlMessage | null {
  const r = new MsgpackReader(bytes);
  const count = r.mapHeader();
  // Control messages are small maps whose first entry is "op"; frames start with "epoch".
  if (count === 0) throw new ProtocolError('bad-request', 'empty map from server');
  const first = r.value();
  if (first !== 'op') return null;
  const m = decodeMap(bytes, 'server message');
  return m as unknown as ControlMessage;
}

/** The small entries of a frame, whatever its dtype; sections are located, not copied. */
export interface FrameInfo {
  epoch: number;
  step: number;
  rank: number;
  world: number;
  shape: number[];
  dtype: string;
  keys: string[];
  labels: BinRef;
  images: BinRef;
  /** Every other entry, as decoded (e.g. a uint8 frame's mean and std). */
  extra: Record<string, Value>;
}

export function peekFrame(bytes: Uint8Array): FrameInfo {
  const r = new MsgpackReader(bytes);
  const count = r.mapHeader();
  const m: Record<string, Value> = Object.create(null) as Record<string, Value>;
  for (let i = 0; i < count; i++) {
    const k = r.str();
    m[k] = r.value();
  }
  const int = (k: string): number => {
    const v = m[k];
    if (typeof v !== 'number') throw new ProtocolError('bad-request', `frame field ${k} is missing`);
    return v;
  };
  const bin = (k: string): BinRef => {
    const v = m[k];
    if (!(v instanceof BinRef)) throw new ProtocolError('bad-request', `frame field ${k} is not bin`);
    return v;
  };
  const { epoch: _e, step: _s, rank: _r, world: _w, shape, dtype, keys, labels: _l, images: _i, ...extra } = m;
  return {
    epoch: int('epoch'),
    step: int('step'),
    rank: int('rank'),
    world: int('world'),
    shape: Array.isArray(shape) ? (shape as number[]) : [],
    dtype: typeof dtype === 'string' ? dtype : '',
    keys: Array.isArray(keys) ? (keys as string[]) : [],
    labels: bin('labels'),
    images: bin('images'),
    extra,
  };
}
