/**
 * Walking a tar archive: a streaming reader over any chunked byte source (file, http, gunzip)
 * and a header-only scan of a local file for random access. Both yield only regular files,
 * named as tarfile names them.
 */
import { readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { TarFormatError } from './errors.ts';
import { BLOCK, decodeHeader, paddedSize, type TarHeader } from './tar-header.ts';
import { MAX_EXTENSION_HEADER, applyGnuLongName, applyPaxRecords, headerKind, memberName, type HeaderKind, type PendingOverrides } from './tar-members.ts';

export interface TarEntry {
  name: string;
  size: number;
  typeflag: string;
  /** Offset of the ustar header right before the data (after any PAX/GNU extension headers). */
  headerOffset: number;
  dataOffset: number;
  data: Buffer;
}

export interface ReadTarOptions {
  url?: string;
  /**
   * false: a member that lies inside one source chunk is returned as a view of that chunk
   * (no copy, but keeping it keeps the whole chunk alive). Default true: every member gets
   * its own buffer (and its own ArrayBuffer, so it can be transferred to a worker).
   */
  copy?: boolean;
}

const EMPTY = Buffer.alloc(0);
/** The largest member the streaming reader loads into memory (1 GiB: far above any image). */
export const MAX_MEMBER_BYTES = 2 ** 30;

function asBuffer(chunk: Uint8Array): Buffer {
  return Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
}

/** Accepts an in-memory list of chunks (or a whole archive as [bytes]) as well as a stream. */
function toAsyncIterator(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>): AsyncIterator<Uint8Array> {
  if (Symbol.asyncIterator in source) return source[Symbol.asyncIterator]();
  const inner = source[Symbol.iterator]();
  return {
    next: async () => inner.next(),
    return: async () => inner.return?.() ?? { done: true, value: undefined },
  };
}

function allZero(b: Uint8Array, n: number): boolean {
  for (let i = 0; i < n; i++) if (b[i] !== 0) return false;
  return true;
}

function loc(url: string | undefined, offset: number, member?: string): { url?: string; offset: number; member?: string } {
  const w: { url?: string; offset: number; member?: string } = { offset };
  if (url !== undefined) w.url = url;
  if (member !== undefined) w.member = member;
  return w;
}

/**
 * Streams the regular-file members of a tar. Chunks are consumed in place: headers and
 * members are read straight out of the current chunk (synchronously, when it holds them) and
 * only gathered across chunks when they straddle a boundary, so there is no per-chunk
 * concatenation and no await per member on the common path.
 */
export async function* readTar(source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, where: ReadTarOptions = {}): AsyncGenerator<TarEntry> {
  const url = where.url;
  const copy = where.copy ?? true;
  const it = toAsyncIterator(source);
  let cur: Buffer = EMPTY;
  let pos = 0;
  let base = 0; // file offset of cur[0]
  let ended = false;
  const scratch = Buffer.alloc(BLOCK);
  const headerLoc = { url, base: 0 }; // reused: no allocation per header

  /** Moves to the next non-empty chunk; false at the end of the source. */
  const nextChunk = async (): Promise<boolean> => {
    base += cur.length;
    cur = EMPTY;
    pos = 0;
    while (!ended) {
      const r = await it.next();
      if (r.done === true) {
        ended = true;
        break;
      }
      if (r.value.length > 0) {
        cur = asBuffer(r.value);
        return true;
      }
    }
    return false;
  };

  /** n bytes that straddle chunks, gathered into a new buffer; throws if the source ends first. */
  const gather = async (n: number, member: string, dataOffset: number): Promise<Buffer> => {
    const out = Buffer.allocUnsafeSlow(n);
    let got = 0;
    while (got < n) {
      if (pos >= cur.length && !(await nextChunk())) {
        throw new TarFormatError(`truncated tar: member data ends after ${got} of ${n} bytes`, loc(url, dataOffset, member));
      }
      const k = Math.min(n - got, cur.length - pos);
      cur.copy(out, got, pos, pos + k);
      got += k;
      pos += k;
    }
    return out;
  };

  /** n bytes at the current position, from the current chunk when it holds them. */
  const take = (n: number): Buffer => {
    const view = cur.subarray(pos, pos + n);
    pos += n;
    if (!copy) return view;
    const out = Buffer.allocUnsafeSlow(n);
    view.copy(out);
    return out;
  };

  /** Skips n bytes; returns how many could be skipped before the source ended. */
  const skip = async (n: number): Promise<number> => {
    let left = n;
    while (left > 0) {
      if (pos >= cur.length && !(await nextChunk())) break;
      const k = Math.min(left, cur.length - pos);
      pos += k;
      left -= k;
    }
    return n - left;
  };

  const pending: PendingOverrides = {};
  try {
    for (;;) {
      if (pos >= cur.length && !(await nextChunk())) return;
      const headerOffset = base + pos;
      let h: TarHeader | null;
      if (cur.length - pos >= BLOCK) {
        headerLoc.base = base;
        h = decodeHeader(cur, pos, headerLoc);
        pos += BLOCK;
      } else {
        let got = 0;
        while (got < BLOCK) {
          if (pos >= cur.length && !(await nextChunk())) break;
          const k = Math.min(BLOCK - got, cur.length - pos);
          cur.copy(scratch, got, pos, pos + k);
          got += k;
          pos += k;
        }
        if (got < BLOCK) {
          // A stream cut inside the end-of-archive zeros lost nothing.
          if (allZero(scratch, got)) return;
          throw new TarFormatError(`truncated tar: header ends after ${got} of ${BLOCK} bytes`, loc(url, headerOffset));
        }
        headerLoc.base = headerOffset;
        h = decodeHeader(scratch, 0, headerLoc);
      }
      if (h === null) return; // end-of-archive block; what follows is padding
      const dataOffset = headerOffset + BLOCK;
      const kind: HeaderKind = headerKind(h, url, headerOffset);
      if (kind === 'file') {
        const size = pending.size ?? h.size;
        const name = pending.name === undefined && h.prefix.length === 0 ? h.name : memberName(h, pending);
        pending.name = undefined;
        pending.size = undefined;
        // A damaged or hostile header may declare any size up to 8 GiB (or more in base-256):
        // refuse before allocating, naming the shard and the member.
        if (size > MAX_MEMBER_BYTES) {
          throw new TarFormatError(
            `member declares ${size} bytes, more than the ${MAX_MEMBER_BYTES} a sample member may hold (damaged header?)`,
            loc(url, headerOffset, name),
          );
        }
        if (pos >= cur.length && size > 0) await nextChunk();
        const data = cur.length - pos >= size ? take(size) : await gather(size, name, dataOffset);
        // Missing padding after complete data loses nothing: the next header read ends cleanly.
        const pad = paddedSize(size) - size;
        if (cur.length - pos >= pad) pos += pad;
        else await skip(pad);
        yield { name, size, typeflag: h.typeflag, headerOffset, dataOffset, data };
      } else if (kind === 'pax' || kind === 'gnuLongName') {
        if (h.size > MAX_EXTENSION_HEADER) {
          throw new TarFormatError(`extension header of ${h.size} bytes is implausibly large`, loc(url, headerOffset));
        }
        if (pos >= cur.length && h.size > 0) await nextChunk();
        let data: Buffer;
        if (cur.length - pos >= h.size) {
          data = cur.subarray(pos, pos + h.size); // parsed right away, so a view is enough
          pos += h.size;
        } else data = await gather(h.size, h.name, dataOffset);
        if (kind === 'pax') applyPaxRecords(data, pending, loc(url, headerOffset));
        else applyGnuLongName(data, pending);
        await skip(paddedSize(h.size) - h.size);
      } else {
        // 'g' records, 'K' link names, unknown types carry data to skip; links, directories,
        // devices and fifos carry none (tarfile ignores their size field too).
        const size = kind === 'noData' ? 0 : kind === 'skip' ? (pending.size ?? h.size) : h.size;
        const skipped = await skip(paddedSize(size));
        if (skipped < size) {
          throw new TarFormatError(`truncated tar: member data ends after ${skipped} of ${size} bytes`, loc(url, dataOffset, h.name));
        }
        if (kind === 'noData' || kind === 'skip') {
          // Extension headers describe the next real member, whatever its type.
          pending.name = undefined;
          pending.size = undefined;
        }
      }
    }
  } finally {
    // Lets a file or socket source release its resources when the consumer stops early.
    if (!ended) await it.return?.();
  }
}

export interface TarMemberInfo {
  name: string;
  size: number;
  headerOffset: number;
  dataOffset: number;
}

/** Yield to the event loop every this many headers so a huge scan doesn't starve timers. */
const SCAN_YIELD_EVERY = 8192;

/**
 * Lists the regular-file members of a local tar by walking its headers with positioned
 * reads: member data is never read, only its size is used to jump to the next header.
 */
export async function scanTarFile(path: string): Promise<TarMemberInfo[]> {
  const fh = await open(path, 'r');
  try {
    const { size: fileSize } = await fh.stat();
    return await scanTarFd(fh.fd, fileSize, path);
  } finally {
    await fh.close();
  }
}

export async function scanTarFd(fd: number, fileSize: number, url: string): Promise<TarMemberInfo[]> {
  const out: TarMemberInfo[] = [];
  const header = Buffer.alloc(BLOCK);
  const pending: PendingOverrides = {};
  let off = 0;
  let headers = 0;
  const readAt = (buf: Buffer, length: number, position: number): number => {
    let got = 0;
    while (got < length) {
      const n = readSync(fd, buf, got, length - got, position + got);
      if (n === 0) break;
      got += n;
    }
    return got;
  };
  while (off < fileSize) {
    if (++headers % SCAN_YIELD_EVERY === 0) await new Promise<void>((r) => setImmediate(r));
    const got = readAt(header, BLOCK, off);
    if (got < BLOCK) {
      if (allZero(header, got)) break;
      throw new TarFormatError(`truncated tar: header ends after ${got} of ${BLOCK} bytes`, loc(url, off));
    }
    const h = decodeHeader(header, 0, { url, base: off });
    if (h === null) break;
    const dataOffset = off + BLOCK;
    const kind = headerKind(h, url, off);
    if (kind === 'file') {
      const size = pending.size ?? h.size;
      const name = memberName(h, pending);
      pending.name = undefined;
      pending.size = undefined;
      if (dataOffset + size > fileSize) {
        throw new TarFormatError(`truncated tar: member data ends after ${fileSize - dataOffset} of ${size} bytes`, loc(url, dataOffset, name));
      }
      out.push({ name, size, headerOffset: off, dataOffset });
      off = dataOffset + paddedSize(size);
    } else if (kind === 'pax' || kind === 'gnuLongName') {
      if (h.size > MAX_EXTENSION_HEADER) {
        throw new TarFormatError(`extension header of ${h.size} bytes is implausibly large`, loc(url, off));
      }
      const data = Buffer.alloc(h.size);
      if (readAt(data, h.size, dataOffset) < h.size) {
        throw new TarFormatError(`truncated tar: extension header data is cut short`, loc(url, dataOffset, h.name));
      }
      if (kind === 'pax') applyPaxRecords(data, pending, loc(url, off));
      else applyGnuLongName(data, pending);
      off = dataOffset + paddedSize(h.size);
    } else {
      const size = kind === 'noData' ? 0 : kind === 'skip' ? (pending.size ?? h.size) : h.size;
      if (dataOffset + size > fileSize) {
        throw new TarFormatError(`truncated tar: member data ends after ${fileSize - dataOffset} of ${size} bytes`, loc(url, dataOffset, h.name));
      }
      if (kind === 'noData' || kind === 'skip') {
        pending.name = undefined;
        pending.size = undefined;
      }
      off = dataOffset + paddedSize(size);
    }
  }
  return out;
}
