/**
 * The rules shared by the streaming reader and the random-access scanner for turning raw tar
 * headers into named regular-file members: long names from PAX 'x' records and GNU 'L'
 * members, the ustar prefix, which typeflags carry data, which are files.
 */
import { TarFormatError } from './errors.ts';
import type { TarHeader } from './tar-header.ts';

/** What the walker does with a header's data area. */
export type HeaderKind =
  | 'file' // regular file: a member
  | 'pax' // 'x'/'X': records that patch the next header
  | 'paxGlobal' // 'g': global records, ignored
  | 'gnuLongName' // 'L': the next header's name
  | 'gnuLongLink' // 'K': the next header's link target, ignored
  | 'noData' // links, devices, directories, fifos: tarfile reads no data for these
  | 'skip'; // anything else: skip its data, as tarfile does for unknown types

export function headerKind(h: TarHeader, url: string | undefined, offset: number): HeaderKind {
  switch (h.typeflag) {
    case 'S':
      // Its data is a sparse map plus fragments; returning it as bytes would be wrong.
      throw new TarFormatError(`GNU sparse member ${JSON.stringify(h.name)} is not supported`, url === undefined ? { offset } : { url, offset });
    case '0':
    case '7': // contiguous file: a regular file for every reader
      return 'file';
    case '\0':
      // Old V7 tars mark directories as untyped members with a trailing slash.
      return h.name.endsWith('/') ? 'noData' : 'file';
    case 'x':
    case 'X':
      return 'pax';
    case 'g':
      return 'paxGlobal';
    case 'L':
      return 'gnuLongName';
    case 'K':
      return 'gnuLongLink';
    case '1':
    case '2':
    case '3':
    case '4':
    case '5':
    case '6':
      return 'noData';
    default:
      return 'skip';
  }
}

/** Overrides collected from extension headers for the next real header. */
export interface PendingOverrides {
  name?: string;
  size?: number;
}

/**
 * Parses PAX records ("<len> <key>=<value>\n") into `pending`. Like tarfile, the first
 * extension header in a chain wins, so only unset fields are filled.
 */
export function applyPaxRecords(data: Uint8Array, pending: PendingOverrides, where: { url?: string; offset: number }): void {
  let pos = 0;
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let path: string | undefined;
  let size: number | undefined;
  while (pos < buf.length) {
    if (buf[pos] === 0) break; // zero padding after the last record
    const space = buf.indexOf(0x20, pos);
    const lenText = space < 0 ? '' : buf.toString('latin1', pos, space);
    const len = /^\d+$/.test(lenText) ? Number(lenText) : NaN;
    if (!Number.isSafeInteger(len) || len <= 0 || pos + len > buf.length || buf[pos + len - 1] !== 0x0a) {
      throw new TarFormatError(`malformed PAX record at byte ${pos} of the extended header`, where);
    }
    const eq = buf.indexOf(0x3d, space + 1);
    if (eq < 0 || eq >= pos + len) throw new TarFormatError(`PAX record without "=" at byte ${pos}`, where);
    const key = buf.toString('utf8', space + 1, eq);
    const value = buf.toString('utf8', eq + 1, pos + len - 1);
    if (key === 'path') path = value;
    else if (key === 'size') {
      if (!/^\d+$/.test(value) || !Number.isSafeInteger(Number(value))) {
        throw new TarFormatError(`bad PAX size ${JSON.stringify(value)}`, where);
      }
      size = Number(value);
    }
    pos += len;
  }
  if (path !== undefined && pending.name === undefined) pending.name = path;
  if (size !== undefined && pending.size === undefined) pending.size = size;
}

/** A GNU 'L' member's data: the name, NUL-terminated. */
export function applyGnuLongName(data: Uint8Array, pending: PendingOverrides): void {
  if (pending.name !== undefined) return;
  let end = data.indexOf(0);
  if (end < 0) end = data.length;
  pending.name = Buffer.from(data.buffer, data.byteOffset, end).toString('utf8');
}

/** The member's full name: an override, else the ustar prefix joined to the name field. */
export function memberName(h: TarHeader, pending: PendingOverrides): string {
  if (pending.name !== undefined) return pending.name;
  return h.prefix.length > 0 ? `${h.prefix}/${h.name}` : h.name;
}

/** Extension-header data is read into memory; refuse absurd sizes instead of allocating them. */
export const MAX_EXTENSION_HEADER = 1 << 20;
