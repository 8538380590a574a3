/**
 * One 512-byte tar header, encoded exactly as Python's tarfile writes a ustar/pax-format
 * header for a short ASCII name, and decoded as tarfile (and GNU tar) read them.
 */
import { TarFormatError } from './errors.ts';

export const BLOCK = 512;
/** tarfile pads a closed archive to a whole number of 20-block records. */
export const RECORD = 10240;
/** Fixed so that two runs over the same data give byte-identical shards. */
export const DEFAULT_MTIME = 0;
export const DEFAULT_MODE = 0o444;
export const DEFAULT_OWNER = 'bigdata';

// Field offsets and widths of the ustar header.
const NAME = 0;
const MODE = 100;
const UID = 108;
const GID = 116;
const SIZE = 124;
const MTIME = 136;
const CHKSUM = 148;
const TYPEFLAG = 156;
const LINKNAME = 157;
const MAGIC = 257;
const UNAME = 265;
const GNAME = 297;
const PREFIX = 345;

export function paddedSize(n: number): number {
  return Math.ceil(n / BLOCK) * BLOCK;
}

export interface HeaderFields {
  name: string;
  size: number;
  mtime?: number;
  mode?: number;
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  typeflag?: string;
}

function writeAscii(out: Uint8Array, pos: number, width: number, s: string, field: string): void {
  if (s.length > width) {
    throw new TarFormatError(`tar ${field} ${JSON.stringify(s)} is longer than ${width} bytes (PAX headers are never written)`);
  }
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0 || c > 0x7f) {
      throw new TarFormatError(`tar ${field} ${JSON.stringify(s)} is not plain ASCII (PAX headers are never written)`);
    }
    out[pos + i] = c;
  }
}

/** tarfile's itn() for in-range values: zero-padded octal, then NUL. */
function writeOctal(out: Uint8Array, pos: number, width: number, value: number, field: string): void {
  const digits = width - 1;
  if (!Number.isInteger(value) || value < 0 || value >= 8 ** digits) {
    throw new TarFormatError(`tar ${field} ${value} does not fit a ${digits}-digit octal field (PAX headers are never written)`);
  }
  let v = value;
  for (let i = digits - 1; i >= 0; i--) {
    out[pos + i] = 0x30 + (v % 8);
    v = Math.floor(v / 8);
  }
  out[pos + digits] = 0;
}

/**
 * Encodes a ustar header. The bytes match tarfile's for PAX_FORMAT and USTAR_FORMAT alike
 * (they only differ for names that need a pax record, which we refuse), including leaving
 * devmajor/devminor empty for regular files as current CPython does.
 */
export function encodeHeader(f: HeaderFields, out?: Uint8Array, offset = 0): Uint8Array {
  const buf = out ?? new Uint8Array(BLOCK);
  if (offset < 0 || offset + BLOCK > buf.length) {
    throw new RangeError(`encodeHeader: no room for a ${BLOCK}-byte header at ${offset}`);
  }
  buf.fill(0, offset, offset + BLOCK);
  const typeflag = f.typeflag ?? '0';
  if (typeflag.length !== 1) throw new TarFormatError(`tar typeflag must be one character, got ${JSON.stringify(typeflag)}`);
  writeAscii(buf, offset + NAME, 100, f.name, 'name');
  writeOctal(buf, offset + MODE, 8, (f.mode ?? DEFAULT_MODE) & 0o7777, 'mode');
  writeOctal(buf, offset + UID, 8, f.uid ?? 0, 'uid');
  writeOctal(buf, offset + GID, 8, f.gid ?? 0, 'gid');
  writeOctal(buf, offset + SIZE, 12, f.size, 'size');
  writeOctal(buf, offset + MTIME, 12, f.mtime ?? DEFAULT_MTIME, 'mtime');
  buf.fill(0x20, offset + CHKSUM, offset + CHKSUM + 8);
  buf[offset + TYPEFLAG] = typeflag.charCodeAt(0);
  // POSIX magic "ustar\0" + version "00".
  buf.set([0x75, 0x73, 0x74, 0x61, 0x72, 0x00, 0x30, 0x30], offset + MAGIC);
  writeAscii(buf, offset + UNAME, 32, f.uname ?? DEFAULT_OWNER, 'uname');
  writeAscii(buf, offset + GNAME, 32, f.gname ?? DEFAULT_OWNER, 'gname');
  let sum = 0;
  for (let i = offset, end = offset + BLOCK; i < end; i++) sum += buf[i]!;
  // "%06o\0" followed by the space that was already there, as tarfile does.
  writeOctal(buf, offset + CHKSUM, 7, sum, 'checksum');
  return buf;
}

export interface TarHeader {
  /** The raw ustar name field (without the prefix). */
  name: string;
  size: number;
  typeflag: string;
  mtime: number;
  mode: number;
  linkname: string;
  /** The ustar prefix field; empty for GNU-magic headers, whose bytes there mean other things. */
  prefix: string;
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  magic: 'ustar' | 'gnu' | 'v7';
}

function fieldEnd(b: Uint8Array, pos: number, width: number): number {
  const end = pos + width;
  for (let i = pos; i < end; i++) if (b[i] === 0) return i;
  return end;
}

function readString(b: Uint8Array, pos: number, width: number): string {
  const end = fieldEnd(b, pos, width);
  if (end === pos) return '';
  let ascii = true;
  for (let i = pos; i < end; i++) {
    if (b[i]! > 0x7f) {
      ascii = false;
      break;
    }
  }
  const buf = Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  return buf.toString(ascii ? 'latin1' : 'utf8', pos, end);
}

// Byte sums are the hot part of a header walk; summing 32-bit words two bytes per 16-bit
// lane (SWAR) is ~3x faster than a byte loop. The last word view is cached because
// consecutive headers come from the same chunk.
let sumBuffer: ArrayBufferLike | null = null;
let sumWords: Uint32Array<ArrayBufferLike> = new Uint32Array(0);

function blockSum(b: Uint8Array, offset: number): number {
  const abs = b.byteOffset + offset;
  if ((abs & 3) === 0) {
    if (b.buffer !== sumBuffer) {
      sumBuffer = b.buffer;
      sumWords = new Uint32Array(b.buffer, 0, b.buffer.byteLength >>> 2);
    }
    const w = sumWords;
    let even = 0;
    let odd = 0;
    // Each 16-bit lane collects at most 128 bytes (< 2^15 + 2^14), so lanes never carry.
    for (let i = abs >>> 2, e = i + BLOCK / 4; i < e; i++) {
      const x = w[i]!;
      even = (even + (x & 0x00ff00ff)) | 0;
      odd = (odd + ((x >>> 8) & 0x00ff00ff)) | 0;
    }
    return (even & 0xffff) + (even >>> 16) + (odd & 0xffff) + (odd >>> 16);
  }
  let sum = 0;
  for (let i = offset, e = offset + BLOCK; i < e; i++) sum += b[i]!;
  return sum;
}

function where(url: string | undefined, offset: number): { url?: string; offset: number } {
  return url === undefined ? { offset } : { url, offset };
}

/** tarfile's nti(): octal text (NUL/space terminated, blank = 0) or GNU base-256. */
function readNumber(b: Uint8Array, pos: number, width: number, field: string, url: string | undefined, fileOffset: number): number {
  const first = b[pos]!;
  if (first === 0x80 || first === 0xff) {
    let n = 0;
    for (let i = pos + 1; i < pos + width; i++) n = n * 256 + b[i]!;
    if (first === 0xff) n -= 256 ** (width - 1);
    if (!Number.isSafeInteger(n)) throw new TarFormatError(`tar ${field} field overflows`, where(url, fileOffset));
    return n;
  }
  const end = fieldEnd(b, pos, width);
  let i = pos;
  while (i < end && (b[i] === 0x20 || b[i] === 0x09)) i++;
  let n = 0;
  let digits = 0;
  for (; i < end; i++) {
    const c = b[i]!;
    if (c >= 0x30 && c <= 0x37) {
      n = n * 8 + (c - 0x30);
      digits++;
    } else break;
  }
  for (; i < end; i++) {
    if (b[i] !== 0x20 && b[i] !== 0x09) {
      throw new TarFormatError(
        `invalid tar ${field} field ${JSON.stringify(Buffer.from(b.subarray(pos, pos + width)).toString('latin1'))}`,
        where(url, fileOffset),
      );
    }
  }
  return digits === 0 ? 0 : n;
}

/**
 * Decodes the header at `offset` within `block`. Returns null for an all-zero block (the end
 * of the archive). `where.base` is the file position of block[0], so that error messages
 * name the header's position in the file when `block` is a chunk or a scratch copy.
 */
export function decodeHeader(block: Uint8Array, offset: number, loc: { url?: string; base?: number } = {}): TarHeader | null {
  // No closures in here: under tsx (esbuild keepNames) each one costs a defineProperty call.
  const fileOffset = (loc.base ?? 0) + offset;
  const url = loc.url;
  if (offset < 0 || block.length - offset < BLOCK) {
    throw new TarFormatError(`truncated tar header: ${Math.max(0, block.length - offset)} of ${BLOCK} bytes`, where(url, fileOffset));
  }
  let unsigned = blockSum(block, offset);
  if (unsigned === 0) return null;
  let stored = 0;
  for (let i = offset + CHKSUM; i < offset + CHKSUM + 8; i++) stored += block[i]!;
  // The checksum is computed with its own field read as eight spaces.
  unsigned = unsigned - stored + 8 * 0x20;
  const chksum = readNumber(block, offset + CHKSUM, 8, 'checksum', url, fileOffset);
  if (chksum !== unsigned) {
    // Some old tars summed signed chars; tarfile and GNU tar accept either.
    let signed = 8 * 0x20;
    for (let i = offset, end = offset + BLOCK; i < end; i++) {
      if (i >= offset + CHKSUM && i < offset + CHKSUM + 8) continue;
      const c = block[i]!;
      signed += c > 127 ? c - 256 : c;
    }
    if (chksum !== signed) {
      throw new TarFormatError(`bad tar header checksum: stored ${chksum}, computed ${unsigned}`, where(url, fileOffset));
    }
  }
  const m = offset + MAGIC;
  let magic: TarHeader['magic'] = 'v7';
  if (block[m] === 0x75 && block[m + 1] === 0x73 && block[m + 2] === 0x74 && block[m + 3] === 0x61 && block[m + 4] === 0x72) {
    magic = block[m + 5] === 0x20 && block[m + 6] === 0x20 ? 'gnu' : 'ustar';
  }
  const tf = block[offset + TYPEFLAG]!;
  return {
    name: readString(block, offset + NAME, 100),
    size: readNumber(block, offset + SIZE, 12, 'size', url, fileOffset),
    typeflag: String.fromCharCode(tf),
    mtime: readNumber(block, offset + MTIME, 12, 'mtime', url, fileOffset),
    mode: readNumber(block, offset + MODE, 8, 'mode', url, fileOffset),
    linkname: readString(block, offset + LINKNAME, 100),
    prefix: magic === 'gnu' ? '' : readString(block, offset + PREFIX, 155),
    uid: readNumber(block, offset + UID, 8, 'uid', url, fileOffset),
    gid: readNumber(block, offset + GID, 8, 'gid', url, fileOffset),
    uname: magic === 'v7' ? '' : readString(block, offset + UNAME, 32),
    gname: magic === 'v7' ? '' : readString(block, offset + GNAME, 32),
    magic,
  };
}

/**
 * The size field of the header at `offset` when the block is a valid header (not all zero,
 * the unsigned checksum right), else -1; a field that is not a number throws as decodeHeader
 * does. The cheap check that an offset index really points just past a member's header,
 * without decoding the other fields: decodeHeader says what is wrong (and accepts the rare
 * signed-sum checksums that this returns -1 for).
 */
export function checkedHeaderSize(block: Uint8Array, offset: number): number {
  if (offset < 0 || block.length - offset < BLOCK) return -1;
  const sum = blockSum(block, offset);
  if (sum === 0) return -1;
  let stored = 0;
  for (let i = offset + CHKSUM; i < offset + CHKSUM + 8; i++) stored += block[i]!;
  if (readNumber(block, offset + CHKSUM, 8, 'checksum', undefined, offset) !== sum - stored + 8 * 0x20) return -1;
  return readNumber(block, offset + SIZE, 12, 'size', undefined, offset);
}
