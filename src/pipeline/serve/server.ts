/**
 * Serves batch frames over ZeroMQ to consumers in other processes, hosts or languages.
 *
 * One ROUTER socket; one loader (its own ring and threads) per rank served. A consumer (DEALER)
 * says hello with its rank and the (epoch, step) it wants next; the server answers "ready" and
 * streams that rank's frames from there, at most `window` of them unacknowledged. Since the
 * epoch plan is a pure function, a restarted consumer simply says hello again with the position
 * of its checkpoint: nothing is lost or repeated, whatever was in flight when it died.
 *
 * Frames leave the ring without a copy: zeromq sends a Buffer over 128 bytes by reference and
 * reads it later from its I/O thread, so a frame's ring slot is only released when (a) the
 * consumer acknowledges the frame (it has all the bytes, so zeromq is done reading them), or
 * (b) zeromq reports the peer disconnected (ZMQ_ROUTER_NOTIFY: its connection and queued
 * messages are gone). A consumer that stays connected without acknowledging holds at most
 * `window` slots of its own rank; other ranks are never affected.
 */
import { Context, Router } from 'zeromq';
import type { LoaderBatch } from '../loader/loader.ts';
import {
  MAX_REQUEST_BYTES,
  PROTOCOL_VERSION,
  ProtocolError,
  decodeRequest,
  encodeMessage,
  type ControlMessage,
  type ErrorCode,
  type HelloRequest,
  type Mode,
  type ReadyMessage,
} from './protocol.ts';

/** What the server needs of a loader (Loader implements it). */
export interface FrameSource {
  readonly plan: { numSamples: number; batchSize: number; seed: number; rank: number; world: number; mode: Mode };
  readonly info: { numClasses: number; channels: number; res: number };
  readonly slotBytes: number;
  stepsPerEpoch(): number;
  epoch(epoch: number, startStep?: number): AsyncGenerator<Pick<LoaderBatch, 'epoch' | 'step' | 'frame' | 'release'>>;
  close(): Promise<void>;
}

export interface FrameServerOptions {
  /** ZeroMQ endpoints to bind: ipc://<path>, tcp://<host>:<port> (tcp://127.0.0.1:* picks a free port). */
  bind: string[];
  /** One source per rank served, all of the same world, batch size, seed and mode. */
  sources: FrameSource[];
  /** The most unacknowledged frames a consumer may have (its hello may ask for fewer). Default 2. */
  window?: number;
  /** First epoch served (default 0). */
  firstEpoch?: number;
  /** Epochs end before this one (the trainer's --epochs); undefined: never. */
  epochs?: number;
  /** ZMTP heartbeats: a silent peer is dropped after `heartbeatTimeoutMs` (default 1000 / 10000). */
  heartbeatIntervalMs?: number;
  heartbeatTimeoutMs?: number;
  /**
   * ZeroMQ I/O threads, which do the sockets' copies (default: one per rank served, at most 8):
   * each consumer's connection is served by one, so ranks do not queue behind each other.
   */
  ioThreads?: number;
  log?: (line: string) => void;
}

export class ServeError extends Error {
  override name = 'ServeError';
  constructor(
    /** The endpoint or rank concerned. */
    readonly where: string,
    message: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

// libzmq draft option (4.3): the ROUTER receives an empty message from a peer that disconnects.
const ZMQ_ROUTER_NOTIFY = 97;
const ZMQ_NOTIFY_DISCONNECT = 2;

/** zeromq's Router with the draft option its TypeScript API does not name. */
class NotifyingRouter extends Router {
  notifyDisconnects(): void {
    this.setInt32Option(ZMQ_ROUTER_NOTIFY, ZMQ_NOTIFY_DISCONNECT);
  }
}

interface Session {
  peer: string;
  id: Buffer;
  rank: number;
  window: number;
  epoch: number;
  step: number;
}

interface Held {
  peer: string;
  epoch: number;
  step: number;
  release: () => void;
}

export interface ServerStats {
  framesSent: number;
  bytesSent: number;
  sessions: number;
  held: number;
  errorsSent: number;
}

/** The frames of one rank: its source, its current consumer, and the frames that consumer holds. */
class RankStream {
  session: Session | null = null;
  /** Frames sent and not yet acknowledged (by any peer: a superseded one may still hold some). */
  readonly held: Held[] = [];
  failure: Error | null = null;
  private iter: AsyncGenerator<Pick<LoaderBatch, 'epoch' | 'step' | 'frame' | 'release'>> | null = null;
  /** Where `iter` stands: the (epoch, step) its next batch would have. */
  private iterEpoch = -1;
  private iterStep = -1;
  private gen = 0;
  private pump: Promise<void> = Promise.resolve();
  private waiters: (() => void)[] = [];

  constructor(
    readonly source: FrameSource,
    private readonly server: FrameServer,
  ) {}

  get rank(): number {
    return this.source.plan.rank;
  }

  notify(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  private async until(pred: () => boolean): Promise<void> {
    while (!pred()) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  start(s: Session): void {
    const gen = ++this.gen;
    this.session = s;
    this.notify();
    const prev = this.pump;
    this.pump = prev.then(() => this.run(gen, s)).catch((err: unknown) => this.fail(gen, s, err));
  }

  stop(): void {
    this.gen++;
    this.session = null;
    this.notify();
  }

  heldBy(peer: string): number {
    let n = 0;
    for (const h of this.held) if (h.peer === peer) n++;
    return n;
  }

  /** Releases the slot of frame (epoch, step) held for `peer`; false if there is none. */
  ack(peer: string, epoch: number, step: number): boolean {
    const i = this.held.findIndex((h) => h.peer === peer && h.epoch === epoch && h.step === step);
    if (i < 0) return false;
    this.held.splice(i, 1)[0]!.release();
    this.notify();
    return true;
  }

  /** A frame zeromq refused to queue: nothing references its slot, so it is released now. */
  unsent(h: Held): void {
    const i = this.held.indexOf(h);
    if (i >= 0) this.held.splice(i, 1)[0]!.release();
    if (this.session?.peer === h.peer) this.stop();
    this.notify();
  }

  /** The peer's connection is gone: zeromq dropped its queue, so its slots are free again. */
  peerGone(peer: string): void {
    for (let i = this.held.length - 1; i >= 0; i--) {
      if (this.held[i]!.peer === peer) this.held.splice(i, 1)[0]!.release();
    }
    if (this.session?.peer === peer) this.stop();
    this.notify();
  }

  private async closeIter(): Promise<void> {
    const it = this.iter;
    this.iter = null;
    this.iterEpoch = this.iterStep = -1;
    if (it) await it.return(undefined);
  }

  private async run(gen: number, s: Session): Promise<void> {
    // The source's ring must be clear of this rank's earlier frames before it can be moved to
    // a new position (the loader drains its run, and slots held here would stall that).
    await this.until(() => gen !== this.gen || this.held.length === 0);
    if (gen !== this.gen) return;
    if (this.failure) throw this.failure;
    let epoch = s.epoch;
    if (!(this.iter && this.iterEpoch === s.epoch && this.iterStep === s.step)) {
      await this.closeIter();
      this.iter = this.source.epoch(s.epoch, s.step);
      this.iterEpoch = s.epoch;
      this.iterStep = s.step;
    }
    const steps = this.source.stepsPerEpoch();
    while (gen === this.gen) {
      await this.until(() => gen !== this.gen || this.heldBy(s.peer) < s.window);
      if (gen !== this.gen) return;
      const r = await this.iter!.next();
      if (r.done) {
        const next = epoch + 1;
        const last = this.server.epochs !== undefined && next >= this.server.epochs;
        this.iter = last ? null : this.source.epoch(next, 0);
        this.iterEpoch = last ? -1 : next;
        this.iterStep = last ? -1 : 0;
        if (gen !== this.gen) return;
        this.server.sendControl(s.id, { op: 'end_epoch', epoch, steps });
        if (last) {
          this.server.sendControl(s.id, { op: 'end', epoch });
          return;
        }
        epoch = next;
        continue;
      }
      const b = r.value;
      this.iterStep = b.step + 1;
      if (gen !== this.gen) {
        b.release();
        return;
      }
      const held: Held = { peer: s.peer, epoch: b.epoch, step: b.step, release: () => b.release() };
      this.held.push(held);
      this.server.sendFrame(s.id, b.frame, held, this);
    }
  }

  private fail(gen: number, s: Session, err: unknown): void {
    const e = err instanceof Error ? err : new Error(String(err));
    this.failure ??= e;
    this.iter = null;
    this.server.log(`rank ${this.rank}: loader failed: ${e.message}`);
    if (gen === this.gen && this.session === s) {
      this.server.sendError(s.id, 'loader-failed', `rank ${this.rank}: ${e.message}`);
      this.stop();
    }
  }

  async close(): Promise<void> {
    this.stop();
    for (const h of this.held.splice(0)) h.release();
    await this.pump.catch(() => undefined);
    await this.closeIter().catch(() => undefined);
  }
}

export class FrameServer {
  readonly endpoints: string[] = [];
  readonly epochs: number | undefined;
  readonly firstEpoch: number;
  readonly window: number;
  readonly stats: ServerStats = { framesSent: 0, bytesSent: 0, sessions: 0, held: 0, errorsSent: 0 };
  private readonly router: NotifyingRouter;
  private readonly context: Context;
  private readonly streams = new Map<number, RankStream>();
  private readonly sessions = new Map<string, Session>();
  private sendChain: Promise<void> = Promise.resolve();
  private receiving: Promise<void> = Promise.resolve();
  private closed = false;
  private readonly logFn: (line: string) => void;
  private readonly ref: FrameSource;

  private constructor(o: FrameServerOptions) {
    if (o.sources.length === 0) throw new ServeError('ranks', 'no rank to serve');
    this.ref = o.sources[0]!;
    for (const s of o.sources) {
      const p = s.plan;
      const q = this.ref.plan;
      if (p.world !== q.world || p.batchSize !== q.batchSize || p.seed !== q.seed || p.mode !== q.mode) {
        throw new ServeError(`rank ${p.rank}`, 'every rank served must share world size, batch size, seed and mode');
      }
      if (this.streams.has(p.rank)) throw new ServeError(`rank ${p.rank}`, `rank ${p.rank} given twice`);
      this.streams.set(p.rank, new RankStream(s, this));
    }
    this.window = o.window ?? 2;
    if (!Number.isInteger(this.window) || this.window < 1) throw new ServeError('window', `window must be a positive integer, got ${this.window}`);
    this.firstEpoch = o.firstEpoch ?? 0;
    this.epochs = o.epochs;
    if (this.epochs !== undefined && this.epochs <= this.firstEpoch) {
      throw new ServeError('epochs', `--epochs ${this.epochs} leaves nothing to serve from epoch ${this.firstEpoch}`);
    }
    this.logFn = o.log ?? (() => undefined);
    this.context = new Context({ ioThreads: o.ioThreads ?? Math.min(8, o.sources.length) });
    this.router = new NotifyingRouter({
      context: this.context,
      mandatory: true,
      // Never wait on one peer's full queue: that would stall every other consumer.
      sendTimeout: 0,
      // Frames are limited by the window; the margin is for control messages.
      sendHighWaterMark: this.window + 64,
      receiveHighWaterMark: 64,
      maxMessageSize: MAX_REQUEST_BYTES,
      heartbeatInterval: o.heartbeatIntervalMs ?? 1000,
      heartbeatTimeout: o.heartbeatTimeoutMs ?? 10_000,
      linger: 0,
    });
    this.router.notifyDisconnects();
  }

  /** Binds every endpoint (ServeError naming the one that fails) and starts serving. */
  static async start(o: FrameServerOptions): Promise<FrameServer> {
    const server = new FrameServer(o);
    try {
      for (const ep of o.bind) {
        try {
          await server.router.bind(ep);
        } catch (e) {
          throw new ServeError(ep, `cannot bind ${ep}: ${(e as Error).message}`, { cause: e });
        }
        server.endpoints.push(server.router.lastEndpoint ?? ep);
      }
    } catch (e) {
      server.closed = true;
      server.router.close();
      throw e;
    }
    server.receiving = server.receiveLoop();
    return server;
  }

  get ranks(): number[] {
    return [...this.streams.keys()];
  }

  log(line: string): void {
    this.logFn(line);
  }

  private async receiveLoop(): Promise<void> {
    try {
      for await (const parts of this.router) {
        if (this.closed) break;
        const id = parts[0]!;
        const peer = id.toString('hex');
        if (parts.length === 2 && parts[1]!.length === 0) {
          this.peerGone(peer);
          continue;
        }
        try {
          if (parts.length !== 2) throw new ProtocolError('bad-request', `a request is one message part, got ${parts.length - 1}`);
          this.handle(peer, id, parts[1]!);
        } catch (e) {
          if (e instanceof ProtocolError) {
            this.sendError(id, e.code, e.message);
            if (e.code === 'bad-request') this.dropSession(peer, `bad request: ${e.message}`);
          } else {
            // A bug here must not stop the server for every other consumer.
            this.log(`internal error on a request from ${peer}: ${(e as Error).stack ?? String(e)}`);
            this.sendError(id, 'bad-request', `internal error: ${(e as Error).message}`);
          }
        }
      }
    } catch (e) {
      if (!this.closed) this.log(`receive loop ended: ${(e as Error).message}`);
    }
  }

  private handle(peer: string, id: Buffer, msg: Buffer): void {
    const req = decodeRequest(msg);
    if (req.op === 'hello') return this.hello(peer, id, req);
    if (req.op === 'bye') {
      if (!this.dropSession(peer, 'said bye')) throw new ProtocolError('no-session', 'bye without a session');
      return;
    }
    for (const s of this.streams.values()) if (s.ack(peer, req.epoch, req.step)) return;
    throw new ProtocolError('no-session', `frame (epoch ${req.epoch}, step ${req.step}) is not in flight to this consumer`);
  }

  private hello(peer: string, id: Buffer, h: HelloRequest): void {
    const plan = this.ref.plan;
    const ranks = this.ranks;
    if (h.rank === undefined && ranks.length > 1) throw new ProtocolError('bad-request', `this server serves ranks ${ranks.join(',')}: hello needs a rank`);
    const rank = h.rank ?? ranks[0]!;
    const stream = this.streams.get(rank);
    if (!stream) throw new ProtocolError('rank-not-served', `rank ${rank} is not served here (this server serves ranks ${ranks.join(',')} of ${plan.world})`);
    const mismatch: string[] = [];
    if (h.world !== undefined && h.world !== plan.world) mismatch.push(`world ${h.world} (server: ${plan.world})`);
    if (h.batch_size !== undefined && h.batch_size !== plan.batchSize) mismatch.push(`batch_size ${h.batch_size} (server: ${plan.batchSize})`);
    if (h.seed !== undefined && h.seed !== plan.seed) mismatch.push(`seed ${h.seed} (server: ${plan.seed})`);
    if (h.mode !== undefined && h.mode !== plan.mode) mismatch.push(`mode ${h.mode} (server: ${plan.mode})`);
    if (mismatch.length) throw new ProtocolError('mismatch', `hello does not match this server: ${mismatch.join(', ')}`);
    const epoch = h.epoch ?? this.firstEpoch;
    const step = h.step ?? 0;
    const steps = stream.source.stepsPerEpoch();
    if (epoch < this.firstEpoch || (this.epochs !== undefined && epoch >= this.epochs)) {
      throw new ProtocolError(
        'out-of-range',
        `epoch ${epoch} is not served (epochs ${this.firstEpoch} to ${this.epochs === undefined ? 'unbounded' : this.epochs - 1})`,
      );
    }
    if (step >= steps) throw new ProtocolError('out-of-range', `step ${step} is out of range: an epoch has ${steps} steps on rank ${rank}`);
    const window = h.window ?? this.window;
    if (window > this.window) throw new ProtocolError('out-of-range', `window ${window} exceeds this server's ${this.window}`);
    if (stream.failure) throw new ProtocolError('loader-failed', `rank ${rank}: ${stream.failure.message}`);

    this.dropSession(peer, null);
    const old = stream.session;
    if (old) {
      this.sendError(old.id, 'superseded', `a newer consumer of rank ${rank} asked for (epoch ${epoch}, step ${step})`);
      this.sessions.delete(old.peer);
      this.log(`rank ${rank}: consumer ${old.peer} superseded`);
    }
    const s: Session = { peer, id, rank, window, epoch, step };
    this.sessions.set(peer, s);
    const ready: ReadyMessage = {
      op: 'ready',
      protocol: PROTOCOL_VERSION,
      rank,
      world: plan.world,
      epoch,
      step,
      window,
      batch_size: plan.batchSize,
      seed: plan.seed,
      mode: plan.mode,
      steps_per_epoch: steps,
      first_epoch: this.firstEpoch,
      epochs: this.epochs ?? null,
      num_samples: plan.numSamples,
      num_classes: stream.source.info.numClasses,
      channels: stream.source.info.channels,
      res: stream.source.info.res,
      max_frame_bytes: stream.source.slotBytes,
    };
    // "ready" goes out before the session's first frame: frames a consumer receives before
    // "ready" belong to an earlier request (it acknowledges and discards them).
    this.sendControl(id, ready);
    this.log(`rank ${rank}: consumer ${peer} from (epoch ${epoch}, step ${step}), window ${window}`);
    stream.start(s);
  }

  /** Ends the peer's session (if any); its unacknowledged frames stay held until acked or gone. */
  private dropSession(peer: string, why: string | null): boolean {
    const s = this.sessions.get(peer);
    if (!s) return false;
    this.sessions.delete(peer);
    const stream = this.streams.get(s.rank)!;
    if (stream.session === s) stream.stop();
    if (why) this.log(`rank ${s.rank}: consumer ${peer} ${why}`);
    return true;
  }

  private peerGone(peer: string): void {
    const s = this.sessions.get(peer);
    if (s) this.log(`rank ${s.rank}: consumer ${peer} disconnected`);
    this.sessions.delete(peer);
    for (const stream of this.streams.values()) stream.peerGone(peer);
  }

  /** Sends are queued: zeromq takes one at a time, and per-peer order must be kept. */
  private enqueue(id: Buffer, body: Buffer, onFail: (code: string) => void): void {
    this.sendChain = this.sendChain.then(async () => {
      if (this.closed) return onFail('closed');
      try {
        await this.router.send([id, body]);
      } catch (e) {
        onFail(String((e as { code?: string }).code ?? (e as Error).message));
      }
    });
  }

  sendControl(id: Buffer, m: ControlMessage): void {
    this.enqueue(id, encodeMessage(m), (code) => {
      if (code !== 'closed') this.log(`could not send ${m.op} to ${id.toString('hex')}: ${code}`);
      if (code === 'EHOSTUNREACH') this.peerGone(id.toString('hex'));
    });
  }

  sendError(id: Buffer, code: ErrorCode, message: string): void {
    this.stats.errorsSent++;
    this.sendControl(id, { op: 'error', code, message });
  }

  sendFrame(id: Buffer, frame: Uint8Array, held: Held, stream: RankStream): void {
    // A Buffer over the ring slot itself: zeromq sends it by reference.
    const body = Buffer.from(frame.buffer, frame.byteOffset, frame.length);
    this.stats.framesSent++;
    this.stats.bytesSent += frame.length;
    this.enqueue(id, body, (code) => {
      // Not queued, so zeromq holds no reference: the slot can be released at once.
      const peer = id.toString('hex');
      if (code === 'closed') return;
      this.log(`rank ${stream.rank}: could not send frame (${held.epoch}, ${held.step}) to ${peer}: ${code}`);
      this.sessions.delete(peer);
      // Unreachable: the peer's queue is gone with it. Otherwise (a full queue) only this frame
      // is known to be out of zeromq's hands; the others stay held until acked or gone.
      if (code === 'EHOSTUNREACH') stream.peerGone(peer);
      else stream.unsent(held);
    });
  }

  /** Stops serving: tells current consumers, closes the socket, ends every loader's threads. */
  async close(): Promise<void> {
    if (this.closed) return;
    for (const s of this.sessions.values()) this.sendError(s.id, 'shutdown', 'the server is stopping');
    this.sessions.clear();
    // Let the goodbyes reach zeromq's queues before the socket goes.
    await this.sendChain;
    this.closed = true;
    this.router.close();
    await this.receiving;
    for (const s of this.streams.values()) await s.close();
    for (const s of this.streams.values()) await s.source.close();
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  get heldFrames(): number {
    let n = 0;
    for (const s of this.streams.values()) n += s.held.length;
    return n;
  }
}
