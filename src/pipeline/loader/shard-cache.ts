// Remote shards are fetched once into a local cache and then read by offset, as the wids reader
// does: random access over HTTP per sample would cost a round trip per image. The download is
// streamed to a temporary name, checked against the index's md5 when there is one, then renamed.
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openUrl } from '../webdataset/open-url.ts';
import { SampleTableError } from './sample-table.ts';

export function defaultCacheDir(): string {
  return process.env['SMLP_SHARD_CACHE'] ?? join(tmpdir(), 'smlp-shard-cache');
}

export function isRemote(url: string): boolean {
  return /^https?:\/\//i.test(url);
}

/** Local path of `url`, downloading it first if needed. Local paths are returned as they are. */
export async function localShard(url: string, cacheDir: string, md5?: string): Promise<string> {
  if (!isRemote(url)) return url.replace(/^file:\/\//, '');
  const name = `${createHash('sha1').update(url).digest('hex').slice(0, 16)}-${url
    .split('/')
    .pop()!
    .replace(/[^\w.-]/g, '_')}`;
  const path = join(cacheDir, name);
  if (existsSync(path)) return path;
  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  const hash = createHash('md5');
  const out = createWriteStream(tmp);
  try {
    // openUrl gunzips .tar.gz transparently: the cache holds plain tars, as offsets need.
    for await (const chunk of await openUrl(url)) {
      hash.update(chunk);
      if (!out.write(chunk)) await new Promise<void>((r) => out.once('drain', () => r()));
    }
    await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
    const got = hash.digest('hex');
    if (md5 && got !== md5) throw new SampleTableError(`md5 mismatch after download: index says ${md5}, got ${got}`, url);
    await rename(tmp, path);
    return path;
  } catch (err) {
    out.destroy();
    await rm(tmp, { force: true });
    throw err;
  }
}
