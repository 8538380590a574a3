/**
 * Grouping tar members into samples with webdataset's rules (tar_file_iterator +
 * group_by_keys): metadata and undotted names skipped, extensions lowercased, consecutive
 * members sharing a key form one sample, a repeated extension is an error.
 */
import { SampleFormatError } from './errors.ts';
import type { TarMemberInfo } from './tar-reader.ts';

export interface WdsSample {
  __key__: string;
  __url__: string;
  /** Payloads by (lowercased) extension. Use sampleMember() for a typed Buffer. */
  [ext: string]: string | Buffer;
}

export interface IndexedSample {
  key: string;
  /** offset = the member's data offset in the file. */
  members: Record<string, { offset: number; size: number }>;
}

// webdataset's base_plus_ext, r"^((?:.*/|)[^.]+)[.]([^/]*)$". Python's "." excludes only
// "\n" (JavaScript's also excludes "\r", U+2028, U+2029), hence [^\n]. Note that the
// fallback branch lets [^.]+ span slashes, so "dir/.x" is key "dir/", ext "x", as in Python.
const KEY_RE = /^((?:[^\n]*\/|)[^.]+)[.]([^/]*)$/;
// tar_file_iterator's skip_meta r"__[^/]*__($|/)" under re.match; Python's "$" also matches
// before a final newline.
const SKIP_META_RE = /^__[^/]*__(?:$|\n$|\/)/;

export function splitKey(name: string): { key: string; ext: string } | null {
  // Fast path for the usual name: the regex's greedy branch splits at the first dot after
  // the last slash whenever that dot has a non-dot character before it.
  const slash = name.lastIndexOf('/');
  const dot = name.indexOf('.', slash + 1);
  if (dot > slash + 1 && !name.includes('\n')) return { key: name.slice(0, dot), ext: name.slice(dot + 1) };
  const m = KEY_RE.exec(name);
  return m === null ? null : { key: m[1]!, ext: m[2]! };
}

/** True for names tar_file_iterator skips as metadata (`__info__`, `__meta__/x.json`). */
export function isMetaName(name: string): boolean {
  if (!name.startsWith('__')) return false; // both rules need it; keeps the common case cheap
  if (!name.includes('/') && name.endsWith('__')) return true;
  return SKIP_META_RE.test(name);
}

/** The payload for `ext`, or a SampleFormatError naming the sample if it is missing. */
export function sampleMember(s: WdsSample, ext: string): Buffer {
  const v = s[ext];
  if (!Buffer.isBuffer(v)) {
    throw new SampleFormatError(`sample has no ${JSON.stringify(ext)} member (has ${sampleExtensions(s).join(', ') || 'none'})`, {
      url: s.__url__,
      key: s.__key__,
    });
  }
  return v;
}

/** The payload extensions of a sample (everything but __key__/__url__). */
export function sampleExtensions(s: WdsSample): string[] {
  return Object.keys(s).filter((k) => k !== '__key__' && k !== '__url__');
}

/**
 * The group_by_keys state machine, independent of where members come from. `push` returns
 * the sample it completes (if any); `flush` returns the last one.
 */
class Grouper<V, S> {
  private key: string | undefined;
  private current: Record<string, V> | undefined;
  private count = 0;

  constructor(
    private readonly url: string,
    private readonly make: (key: string, members: Record<string, V>) => S,
  ) {}

  push(name: string, value: V): S | undefined {
    if (isMetaName(name)) return undefined;
    const parts = splitKey(name);
    if (parts === null) return undefined;
    const ext = parts.ext.toLowerCase();
    let done: S | undefined;
    if (this.current === undefined || parts.key !== this.key) {
      done = this.flush();
      this.key = parts.key;
      this.current = Object.create(null) as Record<string, V>;
      this.count = 0;
    }
    // In Python the sample dict already holds __key__ and __url__, so those clash too.
    if (ext === '__key__' || ext === '__url__' || Object.prototype.hasOwnProperty.call(this.current, ext)) {
      throw new SampleFormatError(`duplicate extension ${JSON.stringify(ext)} in one sample (member ${JSON.stringify(name)})`, {
        url: this.url,
        key: parts.key,
        member: name,
      });
    }
    this.current![ext] = value;
    this.count++;
    return done;
  }

  flush(): S | undefined {
    const cur = this.current;
    const key = this.key;
    this.current = undefined;
    this.key = undefined;
    // valid_sample: a sample with no payload is dropped (cannot happen without a filter, kept
    // so the rule stays explicit).
    if (cur === undefined || key === undefined || this.count === 0) return undefined;
    return this.make(key, cur);
  }
}

export async function* groupSamples(entries: AsyncIterable<{ name: string; data: Buffer }>, where: { url: string }): AsyncGenerator<WdsSample> {
  const url = where.url;
  const g = new Grouper<Buffer, WdsSample>(url, (key, members) => {
    const s: WdsSample = { __key__: key, __url__: url };
    for (const ext in members) {
      // Plain assignment of "__proto__" would replace the prototype instead of adding a key.
      if (ext === '__proto__') Object.defineProperty(s, ext, { value: members[ext], enumerable: true, writable: true, configurable: true });
      else s[ext] = members[ext]!;
    }
    return s;
  });
  for await (const e of entries) {
    const done = g.push(e.name, e.data);
    if (done !== undefined) yield done;
  }
  const last = g.flush();
  if (last !== undefined) yield last;
}

export function groupMemberInfos(infos: readonly TarMemberInfo[], where: { url: string }): IndexedSample[] {
  const out: IndexedSample[] = [];
  const g = new Grouper<{ offset: number; size: number }, IndexedSample>(where.url, (key, members) => ({ key, members: { ...members } }));
  for (const info of infos) {
    const done = g.push(info.name, { offset: info.dataOffset, size: info.size });
    if (done !== undefined) out.push(done);
  }
  const last = g.flush();
  if (last !== undefined) out.push(last);
  return out;
}
