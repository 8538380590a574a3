/**
 * Opening shard URLs as byte streams (local paths, file://, http(s)://, s3://), with gzip detected
 * by its magic bytes and decompressed on the fly, and the shard readers built on them.
 */
import { open } from 'node:fs/promises';
import { Readable, pipeline } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { createGunzip } from 'node:zlib';
import { getObjectStream, S3Error } from '../../shared/s3.ts';
import { UrlError, WebDatasetError } from './errors.ts';
import { groupSamples, type WdsSample } from './samples.ts';
import { readTar } from './tar-reader.ts';
import { expandUrls } from './urls.ts';

// Callers reading shards usually want the sample type from the same place.
export type { WdsSample } from './samples.ts';

export interface OpenUrlOptions {
  signal?: AbortSignal;
}

/** Big reads: fewer chunks means fewer async steps per shard. */
const FILE_CHUNK = 1 << 20;
const GUNZIP_CHUNK = 256 << 10;

const SCHEME_RE = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//;

function describeCause(e: unknown): string {
  if (e instanceof Error) {
    const cause = (e as Error & { cause?: unknown }).cause;
    return cause instanceof Error ? `${e.message}: ${cause.message}` : e.message;
  }
  return String(e);
}

/** Rethrows anything a source throws mid-stream as a UrlError naming the URL. */
async function* wrapErrors(source: AsyncIterable<Uint8Array>, url: string): AsyncGenerator<Uint8Array> {
  try {
    yield* source;
  } catch (e) {
    if (e instanceof WebDatasetError) throw e;
    throw new UrlError(`reading failed: ${describeCause(e)}`, { url }, { cause: e });
  }
}

async function openLocal(path: string, url: string, opts: OpenUrlOptions): Promise<AsyncIterable<Uint8Array>> {
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : describeCause(e);
    throw new UrlError(`cannot open shard: ${why}`, { url }, { cause: e });
  }
  const stream = fh.createReadStream({ highWaterMark: FILE_CHUNK, ...(opts.signal ? { signal: opts.signal } : {}) });
  return stream as AsyncIterable<Uint8Array>;
}

async function openHttp(url: string, opts: OpenUrlOptions): Promise<AsyncIterable<Uint8Array>> {
  let res: Response;
  try {
    res = await fetch(url, opts.signal ? { signal: opts.signal } : {});
  } catch (e) {
    throw new UrlError(`request failed: ${describeCause(e)}`, { url }, { cause: e });
  }
  if (!res.ok) {
    await res.body?.cancel().catch(() => undefined);
    throw new UrlError(`HTTP ${res.status} ${res.statusText}`.trimEnd(), { url });
  }
  if (res.body === null) return Readable.from([]);
  return res.body as unknown as AsyncIterable<Uint8Array>;
}

async function openS3(url: string, opts: OpenUrlOptions): Promise<AsyncIterable<Uint8Array>> {
  try {
    return await getObjectStream(url, opts.signal ? { signal: opts.signal } : {});
  } catch (e) {
    // The S3Error says which (no bucket, no object, credentials refused) and stays the cause.
    if (e instanceof S3Error) throw new UrlError(e.message.replace(/ \(url "[^"]*"\)$/, ''), { url }, { cause: e });
    throw e;
  }
}

/** Yields the peeked chunks again, then the rest of the iterator. */
async function* replay(first: Uint8Array[], rest: AsyncIterator<Uint8Array>): AsyncGenerator<Uint8Array> {
  let finished = false;
  try {
    yield* first;
    for (;;) {
      const r = await rest.next();
      if (r.done === true) {
        finished = true;
        return;
      }
      yield r.value;
    }
  } finally {
    if (!finished) await rest.return?.();
  }
}

/** Looks at the first two bytes; if they are gzip's magic, streams through gunzip. */
async function maybeGunzip(source: AsyncIterable<Uint8Array>, url: string): Promise<AsyncIterable<Uint8Array>> {
  const it = source[Symbol.asyncIterator]();
  const head: Uint8Array[] = [];
  let have = 0;
  while (have < 2) {
    const r = await it.next();
    if (r.done === true) break;
    head.push(r.value);
    have += r.value.length;
  }
  const bytes = head.length === 1 ? head[0]! : Buffer.concat(head);
  const replayed = replay(head, it);
  if (have < 2 || bytes[0] !== 0x1f || bytes[1] !== 0x8b) return replayed;
  const gunzip = createGunzip({ chunkSize: GUNZIP_CHUNK });
  const src = Readable.from(replayed, { objectMode: false });
  // pipeline() forwards a source error into gunzip, so the consumer's loop sees it.
  pipeline(src, gunzip, () => undefined);
  return wrapGzipErrors(gunzip, url);
}

async function* wrapGzipErrors(stream: AsyncIterable<Uint8Array>, url: string): AsyncGenerator<Uint8Array> {
  try {
    yield* stream;
  } catch (e) {
    if (e instanceof WebDatasetError) throw e;
    throw new UrlError(`gzip stream failed: ${describeCause(e)}`, { url }, { cause: e });
  }
}

/**
 * Opens a shard as a stream of byte chunks. Errors while opening (missing file, HTTP
 * status, refused connection, a missing bucket or object) reject this promise; errors while streaming are thrown from
 * the iteration. Both are UrlErrors naming the URL.
 */
export async function openUrl(url: string, opts: OpenUrlOptions = {}): Promise<AsyncIterable<Uint8Array>> {
  const scheme = SCHEME_RE.exec(url)?.[1]?.toLowerCase();
  let raw: AsyncIterable<Uint8Array>;
  if (scheme === undefined) raw = await openLocal(url, url, opts);
  else if (scheme === 'file') {
    let path: string;
    try {
      path = fileURLToPath(url);
    } catch (e) {
      throw new UrlError(`bad file URL: ${describeCause(e)}`, { url }, { cause: e });
    }
    raw = await openLocal(path, url, opts);
  } else if (scheme === 'http' || scheme === 'https') raw = await openHttp(url, opts);
  else if (scheme === 's3') raw = await openS3(url, opts);
  else throw new UrlError(`unsupported URL scheme ${JSON.stringify(scheme)}`, { url });
  return maybeGunzip(wrapErrors(raw, url), url);
}

export interface ReadShardOptions extends OpenUrlOptions {
  /** See ReadTarOptions.copy. */
  copy?: boolean;
}

/** The samples of one shard, in order. */
export async function* readShard(url: string, opts: ReadShardOptions = {}): AsyncGenerator<WdsSample> {
  const bytes = await openUrl(url, opts);
  const entries = readTar(bytes, { url, ...(opts.copy === undefined ? {} : { copy: opts.copy }) });
  yield* groupSamples(entries, { url });
}

/** The samples of every shard the spec expands to, shard after shard. */
export async function* webdataset(urls: string | readonly string[], opts: ReadShardOptions = {}): AsyncGenerator<WdsSample> {
  for (const url of expandUrls(urls)) yield* readShard(url, opts);
}
