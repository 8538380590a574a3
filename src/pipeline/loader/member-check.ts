// The offsets a shard's .idx gives are checked against the tar itself when a sample is first read:
// the worker reads the 512-byte header before each member's data in the same read as the data,
// and that header must be a valid one (checksum) of a regular file of the size the index says,
// named as the index names the member (the sample's key, the member's extension). A mismatch
// means the index (or the shard) is wrong, not one image, so it is fatal: ShardIndexError.
// The usual header is checked on bytes alone (checksum, size, name compared in place); anything
// else (a ustar prefix, other letter case, a signed checksum, a mismatch) takes decodeHeader's
// full parse, which accepts what tar readers accept and says what is wrong. The check costs
// ~1.4 us of CPU a sample (the checksum's byte sum most of it; ~8% of a raw 64x64 sample's work
// in a worker, ~2% of a JPEG's), so a sample is checked once: the table's `checked` flags, shared
// by all threads, record it (a race only checks a sample twice).
import { PathError } from '../errors.ts';
import { LABEL_EXTS } from '../webdataset/codecs.ts';
import { splitKey } from '../webdataset/samples.ts';
import { BLOCK, checkedHeaderSize, decodeHeader } from '../webdataset/tar-header.ts';
import { IMAGE_KINDS, type SampleTable } from './sample-table.ts';

/** Data and index disagree: the message names the shard, the member's data offset and the sample. */
export class ShardIndexError extends PathError {
  readonly offset: number;
  readonly key: string;
  constructor(detail: string, shard: string, offset: number, key: string, ext: string) {
    super(
      `the index does not match the tar at offset ${offset} (sample ${JSON.stringify(key)}, member .${ext}): ${detail}; ` +
        `the shard's .idx is wrong, or the shard was changed or replaced after it was made`,
      shard,
    );
    this.offset = offset;
    this.key = key;
  }
}

// ustar field offsets (see tar-header.ts).
const TYPEFLAG = 156;
const PREFIX = 345;
const NAME_WIDTH = 100;
const FILE_TYPES = new Set(['0', '7', '\0']);
const dotted = (exts: readonly string[]): Uint8Array[] => exts.map((e) => Buffer.from(`.${e}`, 'latin1'));
const IMAGE_DOT_EXTS = dotted(IMAGE_KINDS);
const LABEL_DOT_EXTS = dotted(LABEL_EXTS);

/** True when the header at b[at] is a plain one: a regular file `size` bytes long named key + dotExt. */
function plainMatch(b: Uint8Array, at: number, size: number, key: Uint8Array, dotExt: Uint8Array): boolean {
  const t = b[at + TYPEFLAG];
  // A ustar prefix (or GNU's fields there) makes the name two fields: the full parse joins them.
  if ((t !== 0x30 && t !== 0x37 && t !== 0) || b[at + PREFIX] !== 0) return false;
  const n = key.length;
  const e = dotExt.length;
  if (n + e > NAME_WIDTH || (n + e < NAME_WIDTH && b[at + n + e] !== 0)) return false;
  for (let k = 0; k < n; k++) if (b[at + k] !== key[k]) return false;
  for (let k = 0; k < e; k++) if (b[at + n + k] !== dotExt[k]) return false;
  try {
    return checkedHeaderSize(b, at) === size;
  } catch {
    return false;
  }
}

/** A name a plain ustar header cannot hold: the writer put it in a PAX or GNU extension header. */
function needsExtensionHeader(name: string): boolean {
  return Buffer.byteLength(name) > NAME_WIDTH || /[^\x20-\x7e]/.test(name);
}

interface Member {
  /** The member's data offset in the file (the index's), and where its header is in `b`. */
  offset: number;
  at: number;
  size: number;
  ext: string;
}

/**
 * The full check of one member's header. Returns the sample key the header names, or null where
 * the header cannot hold the name (an extension header before it does; only checksum, type and
 * size are checked then).
 */
function fullCheck(b: Uint8Array, m: Member, key: string, shard: string): string | null {
  const fail = (detail: string): ShardIndexError => new ShardIndexError(detail, shard, m.offset, key, m.ext);
  let h: ReturnType<typeof decodeHeader>;
  try {
    h = decodeHeader(b, m.at, { base: m.offset - BLOCK - m.at });
  } catch (e) {
    throw fail(`no valid tar header precedes it (${(e as Error).message})`);
  }
  if (h === null) throw fail('no tar header precedes it (a zero block)');
  if (!FILE_TYPES.has(h.typeflag)) throw fail(`the header before it is of type ${JSON.stringify(h.typeflag)}, not a regular file`);
  if (h.size !== m.size) throw fail(`its tar header says ${h.size} bytes, the index ${m.size}`);
  const name = h.prefix.length > 0 ? `${h.prefix}/${h.name}` : h.name;
  const parts = splitKey(name);
  const ext = m.ext.toLowerCase();
  if (key.length > 0) {
    const expected = `${key}.${m.ext}`;
    if (name === expected || (parts !== null && parts.key === key && parts.ext.toLowerCase() === ext)) return key;
    if (needsExtensionHeader(expected)) return null;
    throw fail(`the member there is ${JSON.stringify(name)}, the index says ${JSON.stringify(expected)}`);
  }
  // An index without member names (DALI v1.1): the header says which sample this is.
  if (h.prefix.length === 0 && Buffer.byteLength(h.name) >= NAME_WIDTH) return null;
  if (parts === null || parts.ext.toLowerCase() !== ext) throw fail(`the member there is ${JSON.stringify(name)}, not a .${m.ext} member`);
  return parts.key;
}

/**
 * Checks the headers of sample `i`'s label and image members; `b` holds the file from offset
 * `start` on, including both headers. Throws ShardIndexError on any mismatch; does nothing for a
 * sample already checked.
 */
export function checkSampleMembers(table: SampleTable, i: number, b: Uint8Array, start: number): void {
  if (table.checked[i] === 1) return;
  const lo = table.labelOffset[i]!;
  const io = table.imageOffset[i]!;
  const ls = table.labelSize[i]!;
  const is = table.imageSize[i]!;
  const key = table.keyBytesOf(i);
  if (
    key.length > 0 &&
    plainMatch(b, lo - start - BLOCK, ls, key, LABEL_DOT_EXTS[table.labelKind[i]!]!) &&
    plainMatch(b, io - start - BLOCK, is, key, IMAGE_DOT_EXTS[table.imageKind[i]!]!)
  ) {
    table.checked[i] = 1;
    return;
  }
  const shard = table.shardPaths[table.shard[i]!]!;
  const name = table.key(i);
  const label: Member = { offset: lo, at: lo - start - BLOCK, size: ls, ext: LABEL_EXTS[table.labelKind[i]!]! };
  const image: Member = { offset: io, at: io - start - BLOCK, size: is, ext: IMAGE_KINDS[table.imageKind[i]!]! };
  const a = fullCheck(b, label, name, shard);
  const c = fullCheck(b, image, name, shard);
  if (a !== null && c !== null && a !== c) {
    throw new ShardIndexError(
      `its members name two samples, ${JSON.stringify(a)} (.${label.ext}) and ${JSON.stringify(c)} (.${image.ext})`,
      shard,
      io,
      name,
      image.ext,
    );
  }
  table.checked[i] = 1;
}

/** The sample's members do not fit the file: named by its first member (in file order). */
export function readRangeError(table: SampleTable, i: number, detail: string): ShardIndexError {
  const labelFirst = table.labelOffset[i]! < table.imageOffset[i]!;
  return new ShardIndexError(
    detail,
    table.shardPaths[table.shard[i]!]!,
    labelFirst ? table.labelOffset[i]! : table.imageOffset[i]!,
    table.key(i),
    labelFirst ? LABEL_EXTS[table.labelKind[i]!]! : IMAGE_KINDS[table.imageKind[i]!]!,
  );
}
