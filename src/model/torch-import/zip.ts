// A zip reader for torch.save archives (PKWARE APPNOTE 6.3): the end-of-central-directory record
// (and its zip64 form), the central directory, local headers only to find where data starts.
// Entries are read on demand from a ByteSource, so a 500 MB checkpoint is never in memory twice
// and files over 2 GiB work. torch.save stores entries uncompressed (and pads local headers so
// tensor data is 64-byte aligned); deflate is supported for archives re-packed by other tools.
// Every size and offset is checked against the file before use, and each entry's CRC-32 is
// verified when it is read.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import * as zlib from 'node:zlib';
import { ZipError } from './errors.ts';

/** Random access to bytes: a file or a buffer. */
export interface ByteSource {
  readonly size: number;
  /** Exactly `length` bytes at `position` (throws if they are not all there). */
  read(position: number, length: number): Buffer;
  close(): void;
}

export function bufferSource(buf: Uint8Array): ByteSource {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  return {
    size: b.length,
    read(position, length) {
      if (position < 0 || length < 0 || position + length > b.length) {
        throw new RangeError(`read of ${length} bytes at ${position} is outside a ${b.length}-byte buffer`);
      }
      return b.subarray(position, position + length);
    },
    close() {},
  };
}

export function fileSource(path: string): ByteSource {
  const fd = openSync(path, 'r');
  let size: number;
  try {
    size = fstatSync(fd).size;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
  let open = true;
  return {
    size,
    read(position, length) {
      if (position < 0 || length < 0 || position + length > size) {
        throw new RangeError(`read of ${length} bytes at ${position} is outside a ${size}-byte file`);
      }
      const out = Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const n = readSync(fd, out, done, length - done, position + done);
        if (n === 0) throw new RangeError(`${path}: file ended at ${position + done}, expected ${length - done} more bytes`);
        done += n;
      }
      return out;
    },
    close() {
      if (open) closeSync(fd);
      open = false;
    },
  };
}

export const METHOD_STORED = 0;
export const METHOD_DEFLATE = 8;

export interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflate. */
  method: number;
  flags: number;
  compressedSize: number;
  size: number;
  crc32: number;
  /** Offset of the local file header. */
  localHeaderOffset: number;
}

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const EOCD_SIZE = 22;
const MAX_COMMENT = 0xffff;

function u64(buf: Buffer, at: number, where: string, what: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ZipError(where, `${what} ${v} is too large`);
  return Number(v);
}

let crcTable: Int32Array | null = null;

/** CRC-32 (IEEE), zlib's when this Node has it (20.15+), a table otherwise. */
export function crc32(data: Uint8Array): number {
  const native = (zlib as { crc32?: (d: Uint8Array) => number }).crc32;
  if (typeof native === 'function') return native(data) >>> 0;
  if (!crcTable) {
    crcTable = new Int32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      crcTable[n] = c;
    }
  }
  let c = -1;
  for (let i = 0; i < data.length; i++) c = crcTable[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}

export class ZipArchive {
  readonly entries: ReadonlyMap<string, ZipEntry>;

  private constructor(
    private readonly source: ByteSource,
    readonly where: string,
    entries: Map<string, ZipEntry>,
  ) {
    this.entries = entries;
  }

  /** Reads the central directory; the source stays open until close(). */
  static open(source: ByteSource, where = 'zip'): ZipArchive {
    const { cdOffset, cdSize, count } = findCentralDirectory(source, where);
    const cd = source.read(cdOffset, cdSize);
    const entries = new Map<string, ZipEntry>();
    let p = 0;
    for (let i = 0; i < count; i++) {
      if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) {
        throw new ZipError(where, `central directory entry ${i} at ${cdOffset + p} is damaged`);
      }
      const flags = cd.readUInt16LE(p + 8);
      const method = cd.readUInt16LE(p + 10);
      const crc = cd.readUInt32LE(p + 16);
      let compressedSize = cd.readUInt32LE(p + 20);
      let size = cd.readUInt32LE(p + 24);
      const nameLen = cd.readUInt16LE(p + 28);
      const extraLen = cd.readUInt16LE(p + 30);
      const commentLen = cd.readUInt16LE(p + 32);
      const disk = cd.readUInt16LE(p + 34);
      let localHeaderOffset = cd.readUInt32LE(p + 42);
      const end = p + 46 + nameLen + extraLen + commentLen;
      if (end > cd.length) throw new ZipError(where, `central directory entry ${i} runs past the directory`);
      const name = cd.toString(flags & 0x800 ? 'utf8' : 'latin1', p + 46, p + 46 + nameLen);
      const at = `${where}: ${name}`;
      // Zip64: the 32-bit fields that overflowed are 0xffffffff and their values sit, in this
      // order, in extra field 0x0001.
      if (size === 0xffffffff || compressedSize === 0xffffffff || localHeaderOffset === 0xffffffff || disk === 0xffff) {
        const extra = cd.subarray(p + 46 + nameLen, p + 46 + nameLen + extraLen);
        let q = 0;
        let z64: Buffer | null = null;
        while (q + 4 <= extra.length) {
          const id = extra.readUInt16LE(q);
          const len = extra.readUInt16LE(q + 2);
          if (q + 4 + len > extra.length) break;
          if (id === 0x0001) z64 = extra.subarray(q + 4, q + 4 + len);
          q += 4 + len;
        }
        if (!z64) throw new ZipError(at, 'sizes overflow 32 bits but there is no zip64 extra field');
        let r = 0;
        const next = (what: string): number => {
          if (r + 8 > z64!.length) throw new ZipError(at, `zip64 extra field lacks the ${what}`);
          const v = u64(z64!, r, at, what);
          r += 8;
          return v;
        };
        if (size === 0xffffffff) size = next('size');
        if (compressedSize === 0xffffffff) compressedSize = next('compressed size');
        if (localHeaderOffset === 0xffffffff) localHeaderOffset = next('header offset');
      } else if (disk !== 0) {
        throw new ZipError(at, 'multi-disk archives are not supported');
      }
      if (entries.has(name)) throw new ZipError(at, 'the archive holds this name twice');
      entries.set(name, { name, method, flags, compressedSize, size, crc32: crc, localHeaderOffset });
      p = end;
    }
    return new ZipArchive(source, where, entries);
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  entry(name: string): ZipEntry {
    const e = this.entries.get(name);
    if (!e) throw new ZipError(this.where, `no entry ${JSON.stringify(name)}`);
    return e;
  }

  /** Where the entry's (possibly compressed) bytes start, from its local header. */
  dataOffset(entry: ZipEntry): number {
    const at = `${this.where}: ${entry.name}`;
    if (entry.localHeaderOffset + 30 > this.source.size) throw new ZipError(at, `local header offset ${entry.localHeaderOffset} is past the end`);
    const h = this.source.read(entry.localHeaderOffset, 30);
    if (h.readUInt32LE(0) !== SIG_LOCAL) throw new ZipError(at, `no local header at ${entry.localHeaderOffset}`);
    const nameLen = h.readUInt16LE(26);
    const extraLen = h.readUInt16LE(28);
    const start = entry.localHeaderOffset + 30 + nameLen + extraLen;
    if (start + entry.compressedSize > this.source.size) {
      throw new ZipError(at, `data (${entry.compressedSize} bytes at ${start}) runs past the end of the ${this.source.size}-byte file`);
    }
    const localName = this.source.read(entry.localHeaderOffset + 30, nameLen).toString(entry.flags & 0x800 ? 'utf8' : 'latin1');
    if (localName !== entry.name) throw new ZipError(at, `local header names ${JSON.stringify(localName)}`);
    return start;
  }

  /** The entry's bytes, decompressed and CRC-checked. */
  read(name: string): Buffer {
    const entry = this.entry(name);
    const at = `${this.where}: ${name}`;
    if (entry.flags & 0x1) throw new ZipError(at, 'entry is encrypted');
    const raw = this.source.read(this.dataOffset(entry), entry.compressedSize);
    let data: Buffer;
    if (entry.method === METHOD_STORED) {
      if (entry.compressedSize !== entry.size) throw new ZipError(at, `stored entry has compressed size ${entry.compressedSize} but size ${entry.size}`);
      data = raw;
    } else if (entry.method === METHOD_DEFLATE) {
      try {
        // The declared size caps the output: a deflate bomb stops there instead of filling memory.
        data = zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, entry.size) });
      } catch (e) {
        throw new ZipError(at, `cannot inflate: ${(e as Error).message}`, { cause: e });
      }
      if (data.length !== entry.size) throw new ZipError(at, `inflated to ${data.length} bytes, the directory says ${entry.size}`);
    } else {
      throw new ZipError(at, `compression method ${entry.method} is not supported (only stored and deflate)`);
    }
    const crc = crc32(data);
    if (crc !== entry.crc32) {
      throw new ZipError(
        at,
        `CRC-32 mismatch (file damaged?): computed ${crc.toString(16).padStart(8, '0')}, directory says ${entry.crc32.toString(16).padStart(8, '0')}`,
      );
    }
    return data;
  }

  close(): void {
    this.source.close();
  }
}

function findCentralDirectory(source: ByteSource, where: string): { cdOffset: number; cdSize: number; count: number } {
  if (source.size < EOCD_SIZE) throw new ZipError(where, `not a zip archive (${source.size} bytes)`);
  const tailLen = Math.min(source.size, EOCD_SIZE + MAX_COMMENT);
  const tailStart = source.size - tailLen;
  const tail = source.read(tailStart, tailLen);
  // Scan backwards; a candidate counts only if its comment ends exactly at the end of the file,
  // so the signature bytes appearing inside a comment do not fool it.
  let eocd = -1;
  for (let i = tail.length - EOCD_SIZE; i >= 0; i--) {
    if (tail.readUInt32LE(i) === SIG_EOCD && i + EOCD_SIZE + tail.readUInt16LE(i + 20) === tail.length) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new ZipError(where, 'not a zip archive (no end-of-central-directory record)');
  const disk = tail.readUInt16LE(eocd + 4);
  const cdDisk = tail.readUInt16LE(eocd + 6);
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  const eocdPos = tailStart + eocd;
  let cdLimit = eocdPos;
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const locPos = eocdPos - 20;
    if (locPos < 0) throw new ZipError(where, 'zip64 values but no zip64 locator');
    const loc = source.read(locPos, 20);
    if (loc.readUInt32LE(0) !== SIG_ZIP64_LOCATOR) throw new ZipError(where, 'zip64 values but no zip64 locator');
    const recPos = u64(loc, 8, where, 'zip64 record offset');
    if (recPos + 56 > locPos) throw new ZipError(where, `zip64 record offset ${recPos} is out of range`);
    const rec = source.read(recPos, 56);
    if (rec.readUInt32LE(0) !== SIG_ZIP64_EOCD) throw new ZipError(where, `no zip64 end-of-central-directory record at ${recPos}`);
    if (rec.readUInt32LE(16) !== 0 || rec.readUInt32LE(20) !== 0) throw new ZipError(where, 'multi-disk archives are not supported');
    count = u64(rec, 32, where, 'entry count');
    cdSize = u64(rec, 40, where, 'central directory size');
    cdOffset = u64(rec, 48, where, 'central directory offset');
    cdLimit = recPos;
  } else if (disk !== 0 || cdDisk !== 0) {
    throw new ZipError(where, 'multi-disk archives are not supported');
  }
  if (cdOffset + cdSize > cdLimit) {
    throw new ZipError(where, `central directory (${cdSize} bytes at ${cdOffset}) overlaps its end record at ${cdLimit} (truncated file?)`);
  }
  if (count * 46 > cdSize) throw new ZipError(where, `${count} entries cannot fit a ${cdSize}-byte central directory`);
  return { cdOffset, cdSize, count };
}
