/**
 * The wids shard index (JSON): which shards a dataset has and how many samples each holds,
 * so that a reader can map a global sample index to (shard, index in shard).
 */
import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, posix, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { atomicWriteFileAsync } from '../../shared/atomic-write.ts';
import { getObjectBytes, isS3Url, S3Error } from '../../shared/s3.ts';
import { UrlError, WebDatasetError } from './errors.ts';

export interface WidsShard {
  url: string;
  nsamples: number;
  filesize?: number;
  md5sum?: string;
  [extra: string]: unknown;
}

export interface WidsIndex {
  __kind__: 'wids-shard-index-v1';
  wids_version: 1;
  name?: string;
  base?: string;
  shardlist: WidsShard[];
  [extra: string]: unknown;
}

export const WIDS_KIND = 'wids-shard-index-v1';

const SCHEME_RE = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\//;

function isUrl(s: string): boolean {
  return SCHEME_RE.test(s);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Checks the fields readers rely on; the error names the file and the offending field. */
export function validateWidsIndex(value: unknown, file: string): WidsIndex {
  const bad = (field: string, why: string): WebDatasetError => new WebDatasetError(`invalid wids index: ${field} ${why}`, { url: file });
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw bad('document', 'is not a JSON object');
  const v = value as Record<string, unknown>;
  if (v['__kind__'] !== WIDS_KIND) throw bad('__kind__', `must be ${JSON.stringify(WIDS_KIND)}, got ${JSON.stringify(v['__kind__'])}`);
  if (v['wids_version'] !== 1) throw bad('wids_version', `must be 1, got ${JSON.stringify(v['wids_version'])}`);
  if (v['name'] !== undefined && typeof v['name'] !== 'string') throw bad('name', 'must be a string');
  if (v['base'] !== undefined && typeof v['base'] !== 'string') throw bad('base', 'must be a string');
  const list = v['shardlist'];
  if (!Array.isArray(list)) throw bad('shardlist', 'must be an array');
  list.forEach((shard: unknown, i) => {
    const f = `shardlist[${i}]`;
    if (typeof shard !== 'object' || shard === null || Array.isArray(shard)) throw bad(f, 'is not an object');
    const s = shard as Record<string, unknown>;
    if (typeof s['url'] !== 'string' || s['url'].length === 0) throw bad(`${f}.url`, `must be a non-empty string, got ${JSON.stringify(s['url'])}`);
    if (!isCount(s['nsamples'])) throw bad(`${f}.nsamples`, `must be a non-negative integer, got ${JSON.stringify(s['nsamples'])}`);
    if (s['filesize'] !== undefined && !isCount(s['filesize']))
      throw bad(`${f}.filesize`, `must be a non-negative integer, got ${JSON.stringify(s['filesize'])}`);
    if (s['md5sum'] !== undefined && (typeof s['md5sum'] !== 'string' || !/^[0-9a-f]{32}$/.test(s['md5sum']))) {
      throw bad(`${f}.md5sum`, `must be 32 lowercase hex digits, got ${JSON.stringify(s['md5sum'])}`);
    }
  });
  return value as WidsIndex;
}

/** Pretty JSON, written atomically so readers never see half a file. */
export async function writeWidsIndex(path: string, index: WidsIndex): Promise<void> {
  validateWidsIndex(index, path);
  await atomicWriteFileAsync(path, `${JSON.stringify(index, null, 2)}\n`);
}

/**
 * Joins a shard URL onto a base the way wids' urlmerge does: a URL or absolute path is kept,
 * anything else is appended to the base treated as a directory (with or without a slash).
 */
export function resolveShardUrl(url: string, base: string): string {
  if (isUrl(url)) return url;
  // s3:// keys are literal strings, not percent-encoded URL paths: joined as text.
  if (isS3Url(base)) return s3Join(base, url);
  if (isUrl(base)) {
    const m = /^([^?#]*)(\?[^#]*)?(#.*)?$/.exec(url)!;
    const u = new URL(base);
    const relPath = m[1]!;
    u.pathname = relPath.startsWith('/') ? relPath : posix.normalize(posix.join(u.pathname, relPath));
    u.search = m[2] ?? '';
    u.hash = m[3] ?? '';
    return u.toString();
  }
  return isAbsolute(url) ? url : resolve(base, url);
}

function s3Join(base: string, rel: string): string {
  const m = /^(s3:\/\/[^/]+)(\/.*)?$/i.exec(base)!;
  const path = rel.startsWith('/') ? rel : posix.join(m[2] ?? '/', rel);
  return `${m[1]}/${posix.normalize(path).replace(/^\/+/, '')}`;
}

function directoryOf(location: string): string {
  if (!isUrl(location)) return dirname(resolve(location));
  if (isS3Url(location)) return location.slice(0, location.lastIndexOf('/'));
  const u = new URL(location);
  u.pathname = posix.dirname(u.pathname);
  u.search = '';
  u.hash = '';
  return u.toString();
}

async function loadText(location: string): Promise<string> {
  if (isS3Url(location)) {
    try {
      return (await getObjectBytes(location)).toString('utf8');
    } catch (e) {
      if (!(e instanceof S3Error)) throw e;
      throw new UrlError(`cannot fetch wids index: ${e.message.replace(/ \(url "[^"]*"\)$/, '')}`, { url: location }, { cause: e });
    }
  }
  if (/^https?:\/\//i.test(location)) {
    let res: Response;
    try {
      res = await fetch(location);
    } catch (e) {
      throw new UrlError(`cannot fetch wids index: ${(e as Error).message}`, { url: location }, { cause: e });
    }
    if (!res.ok) throw new UrlError(`cannot fetch wids index: HTTP ${res.status} ${res.statusText}`.trimEnd(), { url: location });
    return res.text();
  }
  if (isUrl(location) && !/^file:\/\//i.test(location)) throw new UrlError(`unsupported URL scheme for a wids index`, { url: location });
  const path = /^file:\/\//i.test(location) ? fileURLToPath(location) : location;
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UrlError(`cannot read wids index: ${code === 'ENOENT' ? 'no such file' : (e as Error).message}`, { url: location }, { cause: e });
  }
}

/**
 * Reads and validates an index. resolvedUrls[i] is shardlist[i].url resolved against `base`
 * (itself resolved against the index's folder when relative) or else the index's folder.
 */
export async function readWidsIndex(pathOrUrl: string): Promise<WidsIndex & { resolvedUrls: string[] }> {
  const text = await loadText(pathOrUrl);
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw new WebDatasetError(`wids index is not valid JSON: ${(e as Error).message}`, { url: pathOrUrl }, { cause: e });
  }
  const index = validateWidsIndex(parsed, pathOrUrl);
  const folder = /^file:\/\//i.test(pathOrUrl) ? dirname(fileURLToPath(pathOrUrl)) : directoryOf(pathOrUrl);
  const base = index.base === undefined ? folder : resolveShardUrl(index.base, folder);
  return { ...index, resolvedUrls: index.shardlist.map((s) => resolveShardUrl(s.url, base)) };
}
