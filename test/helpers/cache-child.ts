// A second process using the shard cache, for the tests of processes sharing it.
//   fetch <cacheDir> <maxBytes|inf> <refs json>: fetches the refs, prints one JSON line of statuses.
//   hold  <cacheDir> <maxBytes|inf> <refs json>: fetches, prints {"ready":...}, waits for a line on
//         stdin, then prints whether every file is still there with its md5, and exits.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import { ShardCache, type ShardRef } from '../../src/pipeline/loader/shard-cache.ts';

const [mode, dir, max, refsJson] = process.argv.slice(2);
const cache = ShardCache.at(dir!, max === 'inf' ? Number.POSITIVE_INFINITY : Number(max));
const refs = JSON.parse(refsJson!) as ShardRef[];
const got = await cache.fetchAll(refs, { concurrency: 2 });
const statuses = got.map((s) => s.status);
if (mode === 'fetch') {
  process.stdout.write(`${JSON.stringify({ statuses, pid: process.pid })}\n`);
} else {
  process.stdout.write(`${JSON.stringify({ ready: statuses, pid: process.pid, paths: got.map((s) => s.path) })}\n`);
  process.stdin.setEncoding('utf8');
  await once(process.stdin, 'data');
  const intact = got.map((s, i) => existsSync(s.path) && createHash('md5').update(readFileSync(s.path)).digest('hex') === refs[i]!.md5);
  process.stdout.write(`${JSON.stringify({ intact })}\n`);
  // Exits without releasing: the marks must go with the process.
  process.stdin.destroy();
}
