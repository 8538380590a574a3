// Object storage (S3 and S3-compatible stores) for every layer that moves shards: the loader's
// shard cache and index reader read through it, the shard job can write through it. One small
// surface over AWS's SDK v3: head, get (whole or a byte range), list, put (multipart through
// lib-storage's Upload) and delete, with failures turned into typed errors naming the s3:// URL.
//
// Configuration is the SDK's usual one: the standard credential chain (AWS_ACCESS_KEY_ID /
// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE and ~/.aws files, SSO, web identity,
// container and instance roles); the region from AWS_REGION, AWS_DEFAULT_REGION or the profile,
// else us-east-1; AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL for an S3-compatible store, which is
// then addressed path-style (http://host/bucket/key), as such stores expect.
//
// The SDK is imported on first use only: commands that never touch s3:// do not pay its load time.
import { createReadStream } from 'node:fs';
import type { Readable } from 'node:stream';
import type { S3Client } from '@aws-sdk/client-s3';

type Sdk = typeof import('@aws-sdk/client-s3');

export interface S3Location {
  bucket: string;
  key: string;
}

export interface ByteRange {
  /** First byte. */
  offset: number;
  /** Bytes wanted (> 0). */
  length: number;
}

export interface S3ObjectInfo {
  url: string;
  key: string;
  size: number;
  etag?: string;
  lastModified?: Date;
}

/** Something went wrong with an object store request; `url` names the object (or bucket). */
export class S3Error extends Error {
  readonly url: string;
  /** The store's error code (NoSuchKey, AccessDenied, ...) or the network error's code. */
  readonly code: string | undefined;
  /** HTTP status of the reply, when there was one. */
  readonly status: number | undefined;

  constructor(message: string, url: string, details: { code?: string | undefined; status?: number | undefined; cause?: unknown } = {}) {
    super(`${message} (url ${JSON.stringify(url)})`, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.url = url;
    this.code = details.code;
    this.status = details.status;
  }
}

/** Not an s3://bucket/key URL. */
export class S3UrlError extends S3Error {}
/** The bucket does not exist. */
export class S3NoSuchBucketError extends S3Error {}
/** The bucket exists, the object does not. */
export class S3NoSuchKeyError extends S3Error {}
/** The store refused the credentials or the request (unknown key id, bad signature, no permission). */
export class S3AccessError extends S3Error {}
/** No credentials were found anywhere in the credential chain. */
export class S3CredentialsError extends S3Error {}
/** Anything else: the network, a server error, a truncated reply. */
export class S3RequestError extends S3Error {}

const S3_RE = /^s3:\/\//i;

export function isS3Url(url: string): boolean {
  return S3_RE.test(url);
}

/** `s3://bucket/key` into its parts; the key is taken literally (no percent-decoding), as the AWS CLI does. */
export function parseS3Url(url: string): S3Location {
  if (!isS3Url(url)) throw new S3UrlError('not an s3:// URL', url);
  const rest = url.slice(5);
  const slash = rest.indexOf('/');
  const bucket = slash < 0 ? rest : rest.slice(0, slash);
  const key = slash < 0 ? '' : rest.slice(slash + 1);
  if (bucket.length === 0) throw new S3UrlError('the URL names no bucket (s3://<bucket>/<key>)', url);
  return { bucket, key };
}

export function s3Url(bucket: string, key: string): string {
  return `s3://${bucket}/${key}`;
}

function objectLocation(url: string): S3Location {
  const loc = parseS3Url(url);
  if (loc.key.length === 0 || loc.key.endsWith('/')) throw new S3UrlError('the URL names no object (s3://<bucket>/<key>)', url);
  return loc;
}

/** The store the environment points at: a custom endpoint (path-style) or AWS. */
export function s3Endpoint(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const e = env['AWS_ENDPOINT_URL_S3'] || env['AWS_ENDPOINT_URL'];
  return e ? e : undefined;
}

let sdkPromise: Promise<Sdk> | null = null;
function sdk(): Promise<Sdk> {
  sdkPromise ??= import('@aws-sdk/client-s3');
  return sdkPromise;
}

// One client per configuration seen in the environment: tests and tools that switch endpoints or
// credentials in-process get a client that matches, and everyone else shares one connection pool.
const clients = new Map<string, Promise<S3Client>>();
/** The environment variables that configure the S3 client (endpoint, region, credentials). */
export const S3_CONFIG_VARS: readonly string[] = [
  'AWS_ENDPOINT_URL_S3',
  'AWS_ENDPOINT_URL',
  'AWS_REGION',
  'AWS_DEFAULT_REGION',
  'AWS_PROFILE',
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
  'AWS_CONFIG_FILE',
  'AWS_SHARED_CREDENTIALS_FILE',
];

async function makeClient(): Promise<S3Client> {
  const { S3Client: Client } = await sdk();
  let region = process.env['AWS_REGION'] || process.env['AWS_DEFAULT_REGION'];
  if (!region) {
    // The SDK's own region chain (environment, then the profile's config file); it throws when
    // it finds none, and the AWS CLI's default applies then.
    const probe = new Client({});
    try {
      region = await probe.config.region();
    } catch {
      region = 'us-east-1';
    } finally {
      probe.destroy();
    }
  }
  const endpoint = s3Endpoint();
  return new Client({ region, ...(endpoint ? { endpoint, forcePathStyle: true } : {}) });
}

/** The SDK client for the current environment (for requests this module does not wrap). */
export function s3Client(): Promise<S3Client> {
  const key = JSON.stringify(S3_CONFIG_VARS.map((v) => process.env[v] ?? null));
  let c = clients.get(key);
  if (!c) {
    c = makeClient();
    clients.set(key, c);
    c.catch(() => clients.delete(key));
  }
  return c;
}

interface SdkErrorShape {
  name?: string;
  message?: string;
  code?: string;
  Code?: string;
  $metadata?: { httpStatusCode?: number };
}

const ACCESS_CODES = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
  'AllAccessDisabled',
  'AccountProblem',
  'Forbidden',
]);

const CREDENTIALS_HINT = 'check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the role this host runs under';

/** The SDK's error as one of ours. `bucketExists` settles a HEAD's bare 404 (bucket or key?). */
async function translate(e: unknown, url: string, what: string, bucketExists?: () => Promise<boolean>): Promise<S3Error> {
  if (e instanceof S3Error) return e;
  const err = (e ?? {}) as SdkErrorShape;
  const code = err.Code ?? (err.name && err.name !== 'Error' && err.name !== 'S3ServiceException' ? err.name : undefined) ?? err.code;
  const status = err.$metadata?.httpStatusCode;
  const d = { code, status, cause: e };
  const msg = err.message && err.message !== 'UnknownError' ? err.message : '';
  if (err.name === 'CredentialsProviderError' || code === 'CredentialsProviderError') {
    return new S3CredentialsError(`${what}: no AWS credentials found (${msg}); ${CREDENTIALS_HINT}`, url, d);
  }
  if (code === 'NoSuchBucket') return new S3NoSuchBucketError(`${what}: the bucket does not exist`, url, d);
  if (code === 'NoSuchKey') return new S3NoSuchKeyError(`${what}: no such object`, url, d);
  if (status === 404 && (code === 'NotFound' || code === undefined)) {
    const exists = bucketExists ? await bucketExists().catch(() => true) : true;
    return exists ? new S3NoSuchKeyError(`${what}: no such object`, url, d) : new S3NoSuchBucketError(`${what}: the bucket does not exist`, url, d);
  }
  if ((code !== undefined && ACCESS_CODES.has(code)) || status === 403) {
    return new S3AccessError(`${what}: access refused (${code ?? `HTTP ${status}`}${msg ? `: ${msg}` : ''}); ${CREDENTIALS_HINT}`, url, d);
  }
  const cause = (e as { cause?: unknown } | null)?.cause;
  const detail = msg || (cause instanceof Error ? cause.message : String(e));
  return new S3RequestError(`${what}: ${code ? `${code}: ` : ''}${detail}${status ? ` (HTTP ${status})` : ''}`, url, d);
}

async function bucketExistsFn(bucket: string): Promise<boolean> {
  const { HeadBucketCommand } = await sdk();
  try {
    await (await s3Client()).send(new HeadBucketCommand({ Bucket: bucket }));
    return true;
  } catch (e) {
    return (e as SdkErrorShape).$metadata?.httpStatusCode !== 404;
  }
}

/** Size and version tag of one object. */
export async function headObject(url: string): Promise<S3ObjectInfo> {
  const { bucket, key } = objectLocation(url);
  const { HeadObjectCommand } = await sdk();
  try {
    const r = await (await s3Client()).send(new HeadObjectCommand({ Bucket: bucket, Key: key }));
    return {
      url,
      key,
      size: r.ContentLength ?? 0,
      ...(r.ETag ? { etag: r.ETag } : {}),
      ...(r.LastModified ? { lastModified: r.LastModified } : {}),
    };
  } catch (e) {
    throw await translate(e, url, 'cannot read object metadata', () => bucketExistsFn(bucket));
  }
}

export interface GetObjectOptions {
  range?: ByteRange;
  signal?: AbortSignal;
}

/** Rethrows a failure mid-body as an S3RequestError naming the URL. */
async function* guardBody(body: AsyncIterable<Uint8Array> | Iterable<Uint8Array>, url: string, expected: number | undefined): AsyncGenerator<Uint8Array> {
  let got = 0;
  try {
    for await (const chunk of body) {
      got += chunk.length;
      yield chunk;
    }
  } catch (e) {
    throw new S3RequestError(`reading the object failed after ${got} bytes: ${(e as Error).message ?? String(e)}`, url, { cause: e });
  }
  if (expected !== undefined && got !== expected) {
    throw new S3RequestError(`the object's body ended after ${got} of ${expected} bytes`, url);
  }
}

function rangeHeader(url: string, r: ByteRange): string {
  if (!Number.isSafeInteger(r.offset) || r.offset < 0 || !Number.isSafeInteger(r.length) || r.length <= 0) {
    throw new S3UrlError(`bad byte range offset ${r.offset} length ${r.length}`, url);
  }
  return `bytes=${r.offset}-${r.offset + r.length - 1}`;
}

/**
 * The object's bytes as a stream (all of it, or `range`). Errors before the body starts reject
 * the promise; errors while streaming (including a body shorter than announced) are thrown from
 * the iteration. Both are S3Errors naming the URL.
 */
export async function getObjectStream(url: string, opts: GetObjectOptions = {}): Promise<AsyncIterable<Uint8Array>> {
  const { bucket, key } = objectLocation(url);
  const { GetObjectCommand } = await sdk();
  const range = opts.range ? rangeHeader(url, opts.range) : undefined;
  let res;
  try {
    res = await (await s3Client()).send(
      new GetObjectCommand({ Bucket: bucket, Key: key, ...(range ? { Range: range } : {}) }),
      opts.signal ? { abortSignal: opts.signal } : {},
    );
  } catch (e) {
    throw await translate(e, url, range ? `cannot read ${range}` : 'cannot read object', () => bucketExistsFn(bucket));
  }
  const body = res.Body as (Readable & AsyncIterable<Uint8Array>) | undefined;
  if (!body) return guardBody([], url, res.ContentLength);
  return guardBody(body, url, res.ContentLength);
}

/** The object's bytes in memory (all of it, or `range`, checked to be exactly that long). */
export async function getObjectBytes(url: string, opts: GetObjectOptions = {}): Promise<Buffer> {
  const chunks: Uint8Array[] = [];
  for await (const c of await getObjectStream(url, opts)) chunks.push(c);
  const buf = Buffer.concat(chunks);
  if (opts.range && buf.length !== opts.range.length) {
    throw new S3RequestError(`asked for ${opts.range.length} bytes at ${opts.range.offset}, got ${buf.length} (past the end of the object?)`, url);
  }
  return buf;
}

/**
 * Every object under `prefixUrl` (s3://bucket/prefix; all pages), in key order. Pages with the
 * original ListObjects and a marker (the last key seen) rather than ListObjectsV2's continuation
 * tokens: every S3-compatible store implements it (s3rver's V2 tokens need DES, which OpenSSL 3
 * no longer offers, so its V2 listing fails as soon as it has a second page).
 */
export async function listObjects(prefixUrl: string, opts: { pageSize?: number } = {}): Promise<S3ObjectInfo[]> {
  const { bucket, key: prefix } = parseS3Url(prefixUrl);
  const { ListObjectsCommand } = await sdk();
  const client = await s3Client();
  const out: S3ObjectInfo[] = [];
  let marker: string | undefined;
  for (;;) {
    let r;
    try {
      r = await client.send(
        new ListObjectsCommand({ Bucket: bucket, Prefix: prefix, ...(marker ? { Marker: marker } : {}), ...(opts.pageSize ? { MaxKeys: opts.pageSize } : {}) }),
      );
    } catch (e) {
      throw await translate(e, prefixUrl, 'cannot list objects', () => bucketExistsFn(bucket));
    }
    for (const o of r.Contents ?? []) {
      if (o.Key === undefined) continue;
      out.push({
        url: s3Url(bucket, o.Key),
        key: o.Key,
        size: o.Size ?? 0,
        ...(o.ETag ? { etag: o.ETag } : {}),
        ...(o.LastModified ? { lastModified: o.LastModified } : {}),
      });
    }
    const last = r.Contents?.at(-1)?.Key;
    if (!r.IsTruncated || last === undefined || last === marker) break;
    marker = last;
  }
  return out;
}

export interface PutObjectOptions {
  /** Multipart part size in bytes (at least 5 MiB, S3's minimum; default 16 MiB). */
  partSize?: number;
  /** Parts in flight at once (default 4). */
  queueSize?: number;
  contentType?: string;
  signal?: AbortSignal;
  /** Bytes sent so far, after each part. */
  onProgress?: (loaded: number) => void;
}

/**
 * Writes an object: one PUT when the body fits a single part, else a multipart upload whose parts
 * go up `queueSize` at a time. The object appears whole or not at all (S3 assembles the parts
 * only on completion; a failed or aborted upload is cleaned up), so readers never see half of it.
 */
export async function putObject(url: string, body: Uint8Array | string | Readable, opts: PutObjectOptions = {}): Promise<{ etag?: string }> {
  const { bucket, key } = objectLocation(url);
  const { Upload } = await import('@aws-sdk/lib-storage');
  const upload = new Upload({
    client: await s3Client(),
    params: { Bucket: bucket, Key: key, Body: body, ...(opts.contentType ? { ContentType: opts.contentType } : {}) },
    partSize: opts.partSize ?? 16 << 20,
    queueSize: opts.queueSize ?? 4,
    leavePartsOnError: false,
  });
  if (opts.onProgress) {
    const cb = opts.onProgress;
    upload.on('httpUploadProgress', (p) => {
      if (p.loaded !== undefined) cb(p.loaded);
    });
  }
  const onAbort = (): void => void upload.abort().catch(() => undefined);
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    const r = await upload.done();
    return r.ETag ? { etag: r.ETag } : {};
  } catch (e) {
    throw await translate(e, url, 'cannot write object', () => bucketExistsFn(bucket));
  } finally {
    opts.signal?.removeEventListener('abort', onAbort);
  }
}

/** A local file to an object (streamed; multipart when larger than one part). */
export function uploadFile(path: string, url: string, opts: PutObjectOptions = {}): Promise<{ etag?: string }> {
  return putObject(url, createReadStream(path, { highWaterMark: 1 << 20 }), opts);
}

export async function deleteObject(url: string): Promise<void> {
  const { bucket, key } = objectLocation(url);
  const { DeleteObjectCommand } = await sdk();
  try {
    await (await s3Client()).send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
  } catch (e) {
    throw await translate(e, url, 'cannot delete object', () => bucketExistsFn(bucket));
  }
}

/**
 * Creates the object only if no object has that key (PutObject with If-None-Match: *): true when
 * this call created it, false when one was there (412 PreconditionFailed, or 409 when another
 * conditional write to the key was in progress). Stores that ignore the header (older
 * S3-compatible servers, s3rver among them) simply overwrite and answer true: callers that need
 * put-if-absent there must re-read and compare (see s3-output-store.ts).
 */
export async function putObjectIfAbsent(url: string, body: Uint8Array | string): Promise<boolean> {
  const { bucket, key } = objectLocation(url);
  const { PutObjectCommand } = await sdk();
  try {
    await (await s3Client()).send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body, IfNoneMatch: '*' }));
    return true;
  } catch (e) {
    const err = (e ?? {}) as SdkErrorShape;
    const status = err.$metadata?.httpStatusCode;
    if (status === 412 || status === 409 || err.name === 'PreconditionFailed' || err.Code === 'PreconditionFailed') return false;
    throw await translate(e, url, 'cannot write object', () => bucketExistsFn(bucket));
  }
}

/**
 * Aborts the unfinished multipart uploads under `prefixUrl` whose key `which` accepts (parts of a
 * killed writer, which S3 keeps and bills until aborted). Returns how many were aborted, or null
 * when the store does not implement ListMultipartUploads (s3rver, some S3-compatible stores): a
 * bucket lifecycle rule (AbortIncompleteMultipartUpload) is then the way to clean them.
 */
export async function abortMultipartUploads(prefixUrl: string, which: (key: string) => boolean): Promise<number | null> {
  const { bucket, key: prefix } = parseS3Url(prefixUrl);
  const { ListMultipartUploadsCommand, AbortMultipartUploadCommand } = await sdk();
  const client = await s3Client();
  let aborted = 0;
  let keyMarker: string | undefined;
  let idMarker: string | undefined;
  for (;;) {
    let r;
    try {
      r = await client.send(
        new ListMultipartUploadsCommand({
          Bucket: bucket,
          Prefix: prefix,
          ...(keyMarker ? { KeyMarker: keyMarker } : {}),
          ...(idMarker ? { UploadIdMarker: idMarker } : {}),
        }),
      );
    } catch (e) {
      const err = (e ?? {}) as SdkErrorShape;
      if (err.name === 'NotImplemented' || err.Code === 'NotImplemented' || err.$metadata?.httpStatusCode === 501) return null;
      throw await translate(e, prefixUrl, 'cannot list multipart uploads', () => bucketExistsFn(bucket));
    }
    for (const u of r.Uploads ?? []) {
      if (u.Key === undefined || u.UploadId === undefined || !which(u.Key)) continue;
      try {
        await client.send(new AbortMultipartUploadCommand({ Bucket: bucket, Key: u.Key, UploadId: u.UploadId }));
        aborted++;
      } catch (e) {
        if ((e as SdkErrorShape).name !== 'NoSuchUpload') throw await translate(e, s3Url(bucket, u.Key), 'cannot abort a multipart upload');
      }
    }
    if (!r.IsTruncated) break;
    keyMarker = r.NextKeyMarker;
    idMarker = r.NextUploadIdMarker;
    if (keyMarker === undefined && idMarker === undefined) break;
  }
  return aborted;
}
