/**
 * The few msgpack pieces a batch frame needs, written by hand. The writer puts the small values
 * straight into the target (a ring slot) so that workers fill the sections in place (msgpackr's
 * pack would build the whole document, sections included, in its own buffer: see
 * writeFrameHeader). The reader walks a document without building it (a frame's length, where
 * its sections are) and is the strict check behind readFrame's msgpackr decode: it says what is
 * wrong at which byte, and bin payloads are only located, never copied.
 *
 * Encodings are the smallest that fit (what msgpackr and Python's msgpack also produce), so the
 * sizes computed by the *Size helpers match the bytes written exactly.
 */
import { FrameError } from './errors.ts';

export type SmallValue = string | number | boolean;

/** A decoded msgpack value; bin payloads are not copied, only located. */
export type Value = null | boolean | number | string | BinRef | Value[] | { [key: string]: Value };

/** Where a bin payload lies, relative to the start of the reader's bytes. A class, so that a
 * decoded map can never pass for one. */
export class BinRef {
  readonly offset: number;
  readonly length: number;
  constructor(offset: number, length: number) {
    this.offset = offset;
    this.length = length;
  }
}

const UINT32_MAX = 0xffffffff;
const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/** UTF-8 length as TextEncoder produces it (a lone surrogate becomes U+FFFD, 3 bytes). */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}

export function uintSize(v: number): number {
  return v < 0x80 ? 1 : v < 0x100 ? 2 : v < 0x10000 ? 3 : 5;
}

export function strHeaderSize(byteLength: number): number {
  return byteLength < 32 ? 1 : byteLength < 0x100 ? 2 : byteLength < 0x10000 ? 3 : 5;
}

export function strSize(s: string): number {
  const n = utf8Length(s);
  return strHeaderSize(n) + n;
}

/** Header size of an array or map with `count` elements/entries. */
export function containerHeaderSize(count: number): number {
  return count < 16 ? 1 : count < 0x10000 ? 3 : 5;
}

function isIntEncodable(v: number): boolean {
  return Number.isInteger(v) && v >= -0x80000000 && v <= UINT32_MAX && !Object.is(v, -0);
}

export function valueSize(v: SmallValue): number {
  if (typeof v === 'string') return strSize(v);
  if (typeof v === 'boolean') return 1;
  if (!isIntEncodable(v)) return 9;
  if (v >= 0) return uintSize(v);
  return v >= -32 ? 1 : v >= -0x80 ? 2 : v >= -0x8000 ? 3 : 5;
}

/** Writes msgpack values into `bytes` from `pos` on, checking bounds once per value. */
export class MsgpackWriter {
  pos: number;
  private readonly bytes: Uint8Array;
  private readonly view: DataView;

  constructor(bytes: Uint8Array, pos = 0) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = pos;
  }

  private room(n: number): number {
    const at = this.pos;
    if (at + n > this.bytes.length) {
      throw new FrameError('too-small', `target of ${this.bytes.length} bytes is too small`, at);
    }
    this.pos = at + n;
    return at;
  }

  uint(v: number): void {
    if (v < 0x80) this.bytes[this.room(1)] = v;
    else if (v < 0x100) {
      const at = this.room(2);
      this.bytes[at] = 0xcc;
      this.bytes[at + 1] = v;
    } else if (v < 0x10000) {
      const at = this.room(3);
      this.bytes[at] = 0xcd;
      this.view.setUint16(at + 1, v);
    } else {
      const at = this.room(5);
      this.bytes[at] = 0xce;
      this.view.setUint32(at + 1, v);
    }
  }

  private sized(count: number, fix: number, c16: number, c32: number, fixLimit: number): void {
    if (count < fixLimit) this.bytes[this.room(1)] = fix | count;
    else if (count < 0x10000) {
      const at = this.room(3);
      this.bytes[at] = c16;
      this.view.setUint16(at + 1, count);
    } else {
      const at = this.room(5);
      this.bytes[at] = c32;
      this.view.setUint32(at + 1, count);
    }
  }

  mapHeader(count: number): void {
    this.sized(count, 0x80, 0xde, 0xdf, 16);
  }

  arrayHeader(count: number): void {
    this.sized(count, 0x90, 0xdc, 0xdd, 16);
  }

  str(s: string): void {
    // Keys are nearly always ASCII: copy char codes and skip TextEncoder's per-call cost.
    let ascii = true;
    for (let i = 0; i < s.length; i++) {
      if (s.charCodeAt(i) > 0x7f) {
        ascii = false;
        break;
      }
    }
    const n = ascii ? s.length : utf8Length(s);
    if (n < 32) this.bytes[this.room(1)] = 0xa0 | n;
    else if (n < 0x100) {
      const at = this.room(2);
      this.bytes[at] = 0xd9;
      this.bytes[at + 1] = n;
    } else if (n < 0x10000) {
      const at = this.room(3);
      this.bytes[at] = 0xda;
      this.view.setUint16(at + 1, n);
    } else {
      const at = this.room(5);
      this.bytes[at] = 0xdb;
      this.view.setUint32(at + 1, n);
    }
    const at = this.room(n);
    if (ascii) {
      for (let i = 0; i < n; i++) this.bytes[at + i] = s.charCodeAt(i);
    } else {
      encoder.encodeInto(s, this.bytes.subarray(at, at + n));
    }
  }

  value(v: SmallValue): void {
    if (typeof v === 'string') return this.str(v);
    if (typeof v === 'boolean') {
      this.bytes[this.room(1)] = v ? 0xc3 : 0xc2;
      return;
    }
    if (!isIntEncodable(v)) {
      const at = this.room(9);
      this.bytes[at] = 0xcb;
      this.view.setFloat64(at + 1, v);
    } else if (v >= 0) this.uint(v);
    else if (v >= -32) this.bytes[this.room(1)] = v & 0xff;
    else if (v >= -0x80) {
      const at = this.room(2);
      this.bytes[at] = 0xd0;
      this.view.setInt8(at + 1, v);
    } else if (v >= -0x8000) {
      const at = this.room(3);
      this.bytes[at] = 0xd1;
      this.view.setInt16(at + 1, v);
    } else {
      const at = this.room(5);
      this.bytes[at] = 0xd2;
      this.view.setInt32(at + 1, v);
    }
  }

  /** bin8 header; used for padding entries, whose length is always below 64. */
  bin8Header(length: number): void {
    const at = this.room(2);
    this.bytes[at] = 0xc4;
    this.bytes[at + 1] = length;
  }

  /** bin32 header even for small sections, so the layout does not depend on the batch size. */
  bin32Header(length: number): void {
    const at = this.room(5);
    this.bytes[at] = 0xc6;
    this.view.setUint32(at + 1, length);
  }

  zeros(n: number): void {
    const at = this.room(n);
    this.bytes.fill(0, at, at + n);
  }
}

const MAX_DEPTH = 64;

/** Reads msgpack values from `bytes`; every bound is checked, nothing is copied for bin. */
export class MsgpackReader {
  pos: number;
  readonly bytes: Uint8Array;
  private readonly view: DataView;

  constructor(bytes: Uint8Array, pos = 0) {
    this.bytes = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = pos;
  }

  private take(n: number): number {
    const at = this.pos;
    if (at + n > this.bytes.length) {
      throw new FrameError('truncated', `value needs ${at + n - this.bytes.length} bytes past the end`, at);
    }
    this.pos = at + n;
    return at;
  }

  private u8(): number {
    return this.bytes[this.take(1)]!;
  }
  private u16(): number {
    return this.view.getUint16(this.take(2));
  }
  private u32(): number {
    return this.view.getUint32(this.take(4));
  }

  /** A map's entry count; FrameError('malformed') if the next value is not a map. */
  mapHeader(): number {
    const at = this.pos;
    const b = this.u8();
    if (b >= 0x80 && b <= 0x8f) return b & 0x0f;
    if (b === 0xde) return this.u16();
    if (b === 0xdf) return this.u32();
    throw new FrameError('malformed', `expected a msgpack map, found byte 0x${b.toString(16)}`, at);
  }

  /** The whole value at pos. Strings are decoded; bin payloads are located, not copied. */
  value(depth = 0): Value {
    if (depth > MAX_DEPTH) throw new FrameError('malformed', 'values nested too deep', this.pos);
    const at = this.pos;
    const b = this.u8();
    if (b < 0x80) return b;
    if (b >= 0xe0) return b - 0x100;
    if (b <= 0x8f) return this.mapBody(b & 0x0f, depth);
    if (b <= 0x9f) return this.arrayBody(b & 0x0f, depth);
    if (b <= 0xbf) return this.strBody(b & 0x1f);
    switch (b) {
      case 0xc0:
        return null;
      case 0xc2:
        return false;
      case 0xc3:
        return true;
      case 0xc4:
        return this.binBody(this.u8());
      case 0xc5:
        return this.binBody(this.u16());
      case 0xc6:
        return this.binBody(this.u32());
      case 0xca:
        return this.view.getFloat32(this.take(4));
      case 0xcb:
        return this.view.getFloat64(this.take(8));
      case 0xcc:
        return this.u8();
      case 0xcd:
        return this.u16();
      case 0xce:
        return this.u32();
      case 0xcf:
        return this.u64(at, false);
      case 0xd0:
        return this.view.getInt8(this.take(1));
      case 0xd1:
        return this.view.getInt16(this.take(2));
      case 0xd2:
        return this.view.getInt32(this.take(4));
      case 0xd3:
        return this.u64(at, true);
      case 0xd9:
        return this.strBody(this.u8());
      case 0xda:
        return this.strBody(this.u16());
      case 0xdb:
        return this.strBody(this.u32());
      case 0xdc:
        return this.arrayBody(this.u16(), depth);
      case 0xdd:
        return this.arrayBody(this.u32(), depth);
      case 0xde:
        return this.mapBody(this.u16(), depth);
      case 0xdf:
        return this.mapBody(this.u32(), depth);
      default:
        // 0xc1 is never used; ext types (0xc7-0xc9, 0xd4-0xd8) have no place in a frame.
        throw new FrameError('malformed', `unsupported msgpack byte 0x${b.toString(16)}`, at);
    }
  }

  /**
   * Skips `count` whole values without building them: an explicit counter instead of recursion,
   * so hostile nesting cannot overflow the stack.
   */
  skip(count = 1): void {
    let left = count;
    while (left > 0) {
      left--;
      const at = this.pos;
      const b = this.u8();
      if (b < 0x80 || b >= 0xe0) continue;
      if (b <= 0x8f) {
        left += 2 * (b & 0x0f);
        continue;
      }
      if (b <= 0x9f) {
        left += b & 0x0f;
        continue;
      }
      if (b <= 0xbf) {
        this.take(b & 0x1f);
        continue;
      }
      switch (b) {
        case 0xc0:
        case 0xc2:
        case 0xc3:
          break;
        case 0xc4:
        case 0xd9:
          this.take(this.u8());
          break;
        case 0xc5:
        case 0xda:
          this.take(this.u16());
          break;
        case 0xc6:
        case 0xdb:
          this.take(this.u32());
          break;
        case 0xcc:
        case 0xd0:
          this.take(1);
          break;
        case 0xcd:
        case 0xd1:
          this.take(2);
          break;
        case 0xca:
        case 0xce:
        case 0xd2:
          this.take(4);
          break;
        case 0xcb:
        case 0xcf:
        case 0xd3:
          this.take(8);
          break;
        case 0xdc:
          left += this.u16();
          break;
        case 0xdd:
          left += this.u32();
          break;
        case 0xde:
          left += 2 * this.u16();
          break;
        case 0xdf:
          left += 2 * this.u32();
          break;
        default:
          throw new FrameError('malformed', `unsupported msgpack byte 0x${b.toString(16)}`, at);
      }
    }
  }

  private u64(at: number, signed: boolean): number {
    const hi = signed ? this.view.getInt32(this.take(4)) : this.u32();
    const v = hi * 0x100000000 + this.u32();
    if (!Number.isSafeInteger(v)) throw new FrameError('invalid', 'integer beyond 2^53', at);
    return v;
  }

  private strBody(n: number): string {
    const at = this.take(n);
    try {
      return decoder.decode(this.bytes.subarray(at, at + n));
    } catch {
      throw new FrameError('malformed', 'string is not valid UTF-8', at);
    }
  }

  private binBody(n: number): BinRef {
    return new BinRef(this.take(n), n);
  }

  private arrayBody(n: number, depth: number): Value[] {
    // Every element takes at least one byte: refuse counts the data cannot hold before allocating.
    if (n > this.bytes.length - this.pos) this.take(n);
    const out: Value[] = new Array<Value>(n);
    for (let i = 0; i < n; i++) out[i] = this.value(depth + 1);
    return out;
  }

  private mapBody(n: number, depth: number): { [key: string]: Value } {
    if (2 * n > this.bytes.length - this.pos) this.take(2 * n);
    const out: { [key: string]: Value } = Object.create(null) as { [key: string]: Value };
    for (let i = 0; i < n; i++) {
      const at = this.pos;
      const k = this.value(depth + 1);
      if (typeof k !== 'string') throw new FrameError('malformed', 'map key is not a string', at);
      out[k] = this.value(depth + 1);
    }
    return out;
  }

  /** A str value (FrameError('malformed') if the next value is something else). */
  str(): string {
    const at = this.pos;
    const v = this.value();
    if (typeof v !== 'string') throw new FrameError('malformed', 'expected a string', at);
    return v;
  }
}
