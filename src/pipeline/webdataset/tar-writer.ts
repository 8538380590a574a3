/**
 * Writes samples as webdataset's TarWriter does (members in sorted extension order, mode
 * 0444, owner bigdata, ustar headers, archive closed as tarfile.close() closes it), with a
 * fixed default mtime so that shards are reproducible.
 */
import { createHash, type Hash } from 'node:crypto';
import { open, rename, rm, type FileHandle } from 'node:fs/promises';
import { SampleFormatError, TarFormatError, WebDatasetError } from './errors.ts';
import { BLOCK, DEFAULT_MTIME, RECORD, encodeHeader, paddedSize } from './tar-header.ts';

export interface SampleMembers {
  key: string;
  /** Payloads keyed by extension: 'cls', 'npy', 'jpg', 'seg.png', ... */
  members: Record<string, Uint8Array>;
}

export interface MemberLocation {
  ext: string;
  name: string;
  /** Offset of the member's ustar header. */
  headerOffset: number;
  /** Offset of its data: always headerOffset + 512 (what DALI's index stores). */
  dataOffset: number;
  size: number;
}

const NAME_MAX = 100;
// webdataset readers skip names matching this (tar_file_iterator's skip_meta).
const META_RE = /^__[^/]*__($|\/)/;

function checkAscii(s: string, what: string, key: string): void {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) {
      throw new SampleFormatError(`${what} must be printable ASCII (char code ${c} at ${i})`, { key });
    }
  }
}

/** Throws unless every member name reads back, under webdataset's rules, as (key, ext). */
export function validateSample(key: string, exts: readonly string[]): void {
  if (key.length === 0) throw new SampleFormatError('sample key is empty', { key });
  checkAscii(key, 'sample key', key);
  const base = key.slice(key.lastIndexOf('/') + 1);
  if (base.length === 0) throw new SampleFormatError('sample key ends with "/"', { key });
  if (base.includes('.')) {
    throw new SampleFormatError('sample key has a "." in its last path component, so readers would split it there', { key });
  }
  if (exts.length === 0) throw new SampleFormatError('sample has no members', { key });
  for (const ext of exts) {
    if (ext.length === 0) throw new SampleFormatError('empty extension', { key });
    checkAscii(ext, `extension ${JSON.stringify(ext)}`, key);
    if (ext.includes('/')) throw new SampleFormatError(`extension ${JSON.stringify(ext)} contains "/"`, { key });
    if (ext !== ext.toLowerCase()) {
      throw new SampleFormatError(`extension ${JSON.stringify(ext)} is not lowercase; readers lowercase it`, { key });
    }
    if (ext.startsWith('_')) {
      throw new SampleFormatError(`extension ${JSON.stringify(ext)} starts with "_", which webdataset's TarWriter drops as metadata`, { key });
    }
    const name = `${key}.${ext}`;
    if (name.length > NAME_MAX) {
      throw new SampleFormatError(`member name ${JSON.stringify(name)} is ${name.length} bytes; at most ${NAME_MAX} fit a ustar header`, { key });
    }
    if (META_RE.test(name)) {
      throw new SampleFormatError(`member name ${JSON.stringify(name)} looks like __metadata__ and readers would skip it`, { key });
    }
  }
}

function sortedExts(members: Record<string, Uint8Array>): string[] {
  // Python's sorted() on str: code point order (all ASCII here, so UTF-16 order agrees).
  return Object.keys(members).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

/**
 * Encodes one sample into a single freshly allocated buffer (its own ArrayBuffer, so it can be
 * transferred between threads). Offsets are relative to the start of the buffer.
 */
export function encodeSample(s: SampleMembers, opts: { mtime?: number } = {}): { bytes: Uint8Array; members: MemberLocation[] } {
  const exts = sortedExts(s.members);
  validateSample(s.key, exts);
  let total = 0;
  for (const ext of exts) total += BLOCK + paddedSize(s.members[ext]!.length);
  const bytes = new Uint8Array(total);
  const members: MemberLocation[] = [];
  const mtime = opts.mtime ?? DEFAULT_MTIME;
  let pos = 0;
  for (const ext of exts) {
    const data = s.members[ext]!;
    const name = `${s.key}.${ext}`;
    try {
      encodeHeader({ name, size: data.length, mtime }, bytes, pos);
    } catch (e) {
      if (e instanceof TarFormatError) throw new SampleFormatError(e.message, { key: s.key, member: name }, { cause: e });
      throw e;
    }
    bytes.set(data, pos + BLOCK);
    members.push({ ext, name, headerOffset: pos, dataOffset: pos + BLOCK, size: data.length });
    pos += BLOCK + paddedSize(data.length);
  }
  return { bytes, members };
}

/** Two zero blocks, then zeros up to a whole RECORD, as tarfile.close() writes. */
export function archiveEnd(bytesWrittenSoFar: number): Uint8Array {
  if (bytesWrittenSoFar % BLOCK !== 0) {
    throw new TarFormatError(`archive length ${bytesWrittenSoFar} is not a multiple of ${BLOCK}`);
  }
  const end = bytesWrittenSoFar + 2 * BLOCK;
  return new Uint8Array(Math.ceil(end / RECORD) * RECORD - bytesWrittenSoFar);
}

function shift(members: readonly MemberLocation[], by: number): MemberLocation[] {
  return members.map((m) => ({ ...m, headerOffset: m.headerOffset + by, dataOffset: m.dataOffset + by }));
}

/** Buffers queued beyond this make write() wait for the disk (backpressure). */
const HIGH_WATER = 16 << 20;
/** Linux IOV_MAX: the most buffers one writev may take. */
const MAX_IOV = 1024;

interface Queued {
  bytes: Uint8Array;
  done: () => void;
}

/**
 * Writes one shard to `${path}.tmp` and renames it into place on close, so a reader never
 * sees a half-written shard under its final name. Offsets are assigned in call order, and
 * everything queued while a write is in flight goes out in one writev, so a caller issuing
 * many small writes does not pay one syscall round trip each.
 */
export class TarWriter {
  readonly path: string;
  readonly tmpPath: string;
  private readonly mtime: number;
  /** null when the caller hashes the file itself (the shard job does it off the main thread). */
  private readonly md5: Hash | null;
  private readonly handle: Promise<FileHandle>;
  private queue: Queued[] = [];
  private queuedBytes = 0;
  private flushedOffset = 0;
  private draining: Promise<void> | null = null;
  private failure: WebDatasetError | undefined;
  private offset = 0;
  private count = 0;
  private state: 'open' | 'closing' | 'closed' = 'open';

  constructor(path: string, opts: { mtime?: number; md5?: boolean } = {}) {
    this.path = path;
    this.md5 = opts.md5 === false ? null : createHash('md5');
    this.tmpPath = `${path}.tmp`;
    this.mtime = opts.mtime ?? DEFAULT_MTIME;
    this.handle = open(this.tmpPath, 'w');
    // Surfaced by the first write or close; without this Node reports it as unhandled.
    this.handle.catch(() => undefined);
  }

  get bytesWritten(): number {
    return this.offset;
  }

  get nsamples(): number {
    return this.count;
  }

  /**
   * Resolves once the sample is queued (the writer owns the freshly encoded bytes), waiting
   * only when too much is queued. A failed write surfaces on a later call and on close().
   */
  write(s: SampleMembers): Promise<MemberLocation[]> {
    let encoded: { bytes: Uint8Array; members: MemberLocation[] };
    try {
      encoded = encodeSample(s, { mtime: this.mtime });
    } catch (e) {
      return Promise.reject(e);
    }
    return this.append(encoded.bytes, encoded.members, 1, false);
  }

  /**
   * Appends pre-encoded samples. Resolves when the bytes are in the file, so the caller may
   * reuse `bytes` afterwards (but not before).
   */
  writeEncoded(bytes: Uint8Array, members: MemberLocation[], nsamples: number): Promise<MemberLocation[]> {
    return this.append(bytes, members, nsamples, true);
  }

  private append(bytes: Uint8Array, members: MemberLocation[], nsamples: number, waitForDisk: boolean): Promise<MemberLocation[]> {
    if (this.failure !== undefined) return Promise.reject(this.failure);
    if (this.state !== 'open') return Promise.reject(new WebDatasetError(`write after close`, { url: this.path }));
    if (bytes.length % BLOCK !== 0) {
      return Promise.reject(new TarFormatError(`encoded samples are ${bytes.length} bytes, not a multiple of ${BLOCK}`, { url: this.path }));
    }
    const base = this.offset;
    this.offset += bytes.length;
    this.count += nsamples;
    this.md5?.update(bytes);
    const located = shift(members, base);
    const written = this.enqueue(bytes);
    if (waitForDisk || this.queuedBytes > HIGH_WATER) return written.then(() => located);
    written.catch(() => undefined); // reported through this.failure instead
    return Promise.resolve(located);
  }

  private enqueue(bytes: Uint8Array): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.queue.push({
        bytes,
        done: () => (this.failure === undefined ? resolve() : reject(this.failure)),
      });
      this.queuedBytes += bytes.length;
      this.draining ??= this.drain();
    });
  }

  /** Writes everything queued, batch by batch, until the queue is empty. */
  private async drain(): Promise<void> {
    while (this.queue.length > 0) {
      const batch = this.queue.splice(0, MAX_IOV);
      let size = 0;
      for (const q of batch) size += q.bytes.length;
      if (this.failure === undefined) {
        try {
          const fh = await this.handle;
          let bufs = batch.map((q) => q.bytes);
          let done = 0;
          while (done < size) {
            const { bytesWritten } = await fh.writev(bufs, this.flushedOffset + done);
            done += bytesWritten;
            if (done < size) bufs = dropPrefix(bufs, bytesWritten);
          }
        } catch (e) {
          this.failure = new WebDatasetError(`writing shard failed: ${String(e)}`, { url: this.tmpPath, offset: this.flushedOffset }, { cause: e });
        }
      }
      this.flushedOffset += size;
      this.queuedBytes -= size;
      for (const q of batch) q.done();
    }
    this.draining = null;
  }

  async close(): Promise<{ path: string; size: number; md5: string; nsamples: number }> {
    if (this.state !== 'open') throw new WebDatasetError(`close called twice`, { url: this.path });
    this.state = 'closing';
    const tail = archiveEnd(this.offset);
    const size = this.offset + tail.length;
    this.md5?.update(tail);
    await this.enqueue(tail);
    const fh = await this.handle;
    await fh.sync();
    await fh.close();
    await rename(this.tmpPath, this.path);
    this.state = 'closed';
    return { path: this.path, size, md5: this.md5 ? this.md5.digest('hex') : '', nsamples: this.count };
  }

  /** Stops writing and removes the temporary file; safe after a failed write or close. */
  async abort(): Promise<void> {
    if (this.state === 'closed') return;
    this.state = 'closed';
    await this.draining;
    try {
      const fh = await this.handle;
      await fh.close();
    } catch {
      // Never opened, or already closed by a failed close(): nothing to release.
    }
    await rm(this.tmpPath, { force: true });
  }
}

/** The buffers left after the first n bytes were written by a partial writev. */
function dropPrefix(bufs: Uint8Array[], n: number): Uint8Array[] {
  let i = 0;
  let left = n;
  while (i < bufs.length && left >= bufs[i]!.length) left -= bufs[i++]!.length;
  const rest = bufs.slice(i);
  if (rest.length > 0 && left > 0) rest[0] = rest[0]!.subarray(left);
  return rest;
}
