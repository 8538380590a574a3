// Shards held in shared memory: each local shard read once, whole, into a SharedArrayBuffer that
// every worker thread sees, so a sample's read becomes a view instead of a positioned read
// (a syscall and a page-cache copy: 3-5 us of a raw 64x64 sample's ~17 us in a worker; bench
// pipeline --reads file,memory). The cost is the shards' size in RAM, once per process: opt-in.
import { open, stat } from 'node:fs/promises';
import { freemem } from 'node:os';
import { PathError } from '../errors.ts';

export class ShardMemoryError extends PathError {}

export interface ShardMemory {
  /** The shards, as the sample table names them. */
  paths: string[];
  /** One per shard, in the sample table's order, each exactly the shard's size. */
  buffers: SharedArrayBuffer[];
  bytes: number;
  seconds: number;
}

export interface ShardMemoryOptions {
  /** Bytes the shards may take (default: 90% of the memory the OS reports available). */
  available?: number;
  /** Called after each shard with the bytes loaded so far and the total. */
  onProgress?: (loaded: number, total: number) => void;
}

const CHUNK = 64 << 20;
const PARALLEL = 4;
const size = (n: number): string => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`);

export async function loadShardsIntoMemory(paths: readonly string[], o: ShardMemoryOptions = {}): Promise<ShardMemory> {
  const t0 = performance.now();
  const sizes = await Promise.all(paths.map(async (p) => (await stat(p)).size));
  const total = sizes.reduce((a, b) => a + b, 0);
  const available = o.available ?? Math.floor(freemem() * 0.9);
  if (total > available) {
    throw new ShardMemoryError(
      `holding the ${paths.length} shards in memory needs ${size(total)}, and ${size(available)} is available: ` +
        'read them from disk instead (leave out --in-memory), or use a machine with more memory',
      paths[0],
    );
  }
  const buffers: SharedArrayBuffer[] = new Array(paths.length);
  let loaded = 0;
  let next = 0;
  const worker = async (): Promise<void> => {
    for (let s = next++; s < paths.length; s = next++) {
      buffers[s] = await readWhole(paths[s]!, sizes[s]!);
      loaded += sizes[s]!;
      o.onProgress?.(loaded, total);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, paths.length) }, worker));
  return { paths: [...paths], buffers, bytes: total, seconds: (performance.now() - t0) / 1000 };
}

async function readWhole(path: string, size: number): Promise<SharedArrayBuffer> {
  const sab = new SharedArrayBuffer(size);
  const view = new Uint8Array(sab);
  const fh = await open(path, 'r');
  try {
    let off = 0;
    while (off < size) {
      const { bytesRead } = await fh.read(view, off, Math.min(CHUNK, size - off), off);
      if (bytesRead === 0) throw new ShardMemoryError(`the shard ended at byte ${off} while loading ${size} bytes: it changed on disk`, path);
      off += bytesRead;
    }
    // Grown since the stat: the sample table (built from the shard as it was) may not fit it.
    if ((await fh.stat()).size !== size) throw new ShardMemoryError(`the shard changed size while loading (${size} bytes at the start)`, path);
  } finally {
    await fh.close();
  }
  return sab;
}
