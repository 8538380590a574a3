/**
 * A consumer of served frames in Node (tests, the benchmark, and a reference for other
 * languages): a DEALER socket that says hello at a position, acknowledges every frame on
 * receipt, and hands out the frames as the bytes they arrived in.
 */
import { Dealer } from 'zeromq';
import {
  ProtocolError,
  decodeServerMessage,
  encodeMessage,
  peekFrame,
  type EndEpochMessage,
  type EndMessage,
  type ErrorCode,
  type FrameInfo,
  type HelloRequest,
  type ReadyMessage,
} from './protocol.ts';

export class ServeRemoteError extends Error {
  override name = 'ServeRemoteError';
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(`server: ${code}: ${message}`);
  }
}

export class ServeTimeoutError extends Error {
  override name = 'ServeTimeoutError';
}

export interface ServedFrame {
  kind: 'frame';
  info: FrameInfo;
  /** The whole frame as received (a plain msgpack document, as in the ring and in dump files). */
  bytes: Buffer;
}

export type ServedMessage = ServedFrame | EndEpochMessage | EndMessage;

export interface ClientOptions {
  /** Fail a receive that waits longer than this (default: wait forever). */
  receiveTimeoutMs?: number;
}

export class ServeClient {
  readonly endpoint: string;
  private readonly sock: Dealer;
  private closed = false;

  constructor(endpoint: string, o: ClientOptions = {}) {
    this.endpoint = endpoint;
    this.sock = new Dealer({ linger: 0, ...(o.receiveTimeoutMs !== undefined ? { receiveTimeout: o.receiveTimeoutMs } : {}) });
    this.sock.connect(endpoint);
  }

  private async receive(): Promise<Buffer> {
    try {
      const parts = await this.sock.receive();
      if (parts.length !== 1) throw new ProtocolError('bad-request', `server sent ${parts.length} message parts`);
      return parts[0]!;
    } catch (e) {
      if ((e as { code?: string }).code === 'EAGAIN') throw new ServeTimeoutError(`no message from ${this.endpoint} in time`);
      throw e;
    }
  }

  async send(m: Parameters<typeof encodeMessage>[0] | Buffer): Promise<void> {
    await this.sock.send(Buffer.isBuffer(m) ? m : encodeMessage(m));
  }

  /**
   * Asks for frames from (epoch, step) and waits for "ready". Frames still arriving from an
   * earlier hello are acknowledged and dropped; an error reply throws ServeRemoteError.
   */
  async hello(h: Omit<HelloRequest, 'op'>): Promise<ReadyMessage> {
    await this.send({ op: 'hello', ...h });
    for (;;) {
      const msg = await this.receive();
      const control = decodeServerMessage(msg);
      if (control === null) {
        const info = peekFrame(msg);
        await this.send({ op: 'ack', epoch: info.epoch, step: info.step });
        continue;
      }
      if (control.op === 'ready') return control;
      if (control.op === 'error') throw new ServeRemoteError(control.code, control.message);
      // end_epoch / end of the earlier request: nothing to do.
    }
  }

  /** The next frame (acknowledged on receipt) or end-of-epoch / end message. */
  async next(): Promise<ServedMessage> {
    const msg = await this.receive();
    const control = decodeServerMessage(msg);
    if (control === null) {
      const info = peekFrame(msg);
      await this.send({ op: 'ack', epoch: info.epoch, step: info.step });
      return { kind: 'frame', info, bytes: msg };
    }
    if (control.op === 'error') throw new ServeRemoteError(control.code, control.message);
    if (control.op === 'ready') throw new ProtocolError('bad-request', 'unexpected "ready"');
    return control;
  }

  /** Frames until the server's "end" (or forever with an unbounded server). */
  async *frames(): AsyncGenerator<ServedFrame> {
    for (;;) {
      const m = await this.next();
      if ('kind' in m) yield m;
      else if (m.op === 'end') return;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sock.close();
  }
}
