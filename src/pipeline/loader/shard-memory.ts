// Shards held in shared memory: each local shard read once, whole, into a SharedArrayBuffer that
// every worker thread sees, so a sample's read becomes a view instead of a positioned read
// (a syscall and a page-cache copy: ~3 us of a raw 64x64 sample's 12-18 us in a worker; bench
// pipeline --reads file,memory). The cost is the shards' size in RAM, once per process: opt-in.
import { open, stat } from 'node:fs/promises';
import { freemem, totalmem } from 'node:os';
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
  /** Bytes the shards may take (default: 90% of availableMemory(), less `reserve`). */
  available?: number;
  /** Bytes the caller will allocate besides the shards (its ring), taken off the default. */
  reserve?: number;
  /** Called as the bytes come in (every 64 MiB and at each shard's end), with the total. */
  onProgress?: (loaded: number, total: number) => void;
}

// Reads of 64 MiB keep each call short enough for progress lines and an early stop; four files
// at once keep a network or RAID filesystem busy without thrashing a single disk.
const CHUNK = 64 << 20;
const PARALLEL = 4;
const size = (n: number): string => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(2)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`);

/**
 * Memory this process can still take: what the OS reports available, and under a cgroup limit
 * (a container, a Slurm job) no more than the limit less what the process already uses.
 */
export function availableMemory(): number {
  const free = freemem();
  const limit = process.constrainedMemory?.() ?? 0;
  if (limit > 0 && limit < totalmem()) return Math.max(0, Math.min(free, limit - process.memoryUsage.rss()));
  return free;
}

export async function loadShardsIntoMemory(paths: readonly string[], o: ShardMemoryOptions = {}): Promise<ShardMemory> {
  const t0 = performance.now();
  const sizes = await Promise.all(
    paths.map((p) =>
      stat(p).then(
        (st) => st.size,
        (err: unknown) => Promise.reject(fileError(p, 'cannot stat it', err)),
      ),
    ),
  );
  const total = sizes.reduce((a, b) => a + b, 0);
  const available = o.available ?? Math.max(0, Math.floor(availableMemory() * 0.9) - (o.reserve ?? 0));
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
  let failed = false;
  const progress = (n: number): void => {
    loaded += n;
    if (!failed) o.onProgress?.(loaded, total);
  };
  const worker = async (): Promise<void> => {
    for (let s = next++; s < paths.length && !failed; s = next++) buffers[s] = await readWhole(paths[s]!, sizes[s]!, progress, () => failed);
  };
  // The first failure stops the others at their next chunk (and silences progress).
  const stopOthers = (err: unknown): Promise<never> => {
    failed = true;
    return Promise.reject(err);
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL, paths.length) }, () => worker().catch(stopOthers)));
  return { paths: [...paths], buffers, bytes: total, seconds: (performance.now() - t0) / 1000 };
}

function fileError(path: string, what: string, err: unknown): ShardMemoryError {
  return new ShardMemoryError(`${what}: ${err instanceof Error ? err.message : String(err)}`, path);
}

async function readWhole(path: string, bytes: number, progress: (n: number) => void, stopped: () => boolean): Promise<SharedArrayBuffer> {
  let sab: SharedArrayBuffer;
  try {
    sab = new SharedArrayBuffer(bytes);
  } catch (err) {
    throw fileError(path, `cannot allocate ${size(bytes)} of shared memory for it`, err);
  }
  const view = new Uint8Array(sab);
  const fh = await open(path, 'r').catch((err: unknown) => Promise.reject(fileError(path, 'cannot open it', err)));
  try {
    let off = 0;
    while (off < bytes && !stopped()) {
      const { bytesRead } = await fh
        .read(view, off, Math.min(CHUNK, bytes - off), off)
        .catch((err: unknown) => Promise.reject(fileError(path, `cannot read it at byte ${off}`, err)));
      if (bytesRead === 0) throw new ShardMemoryError(`the shard ended at byte ${off} while loading ${bytes} bytes: it changed on disk`, path);
      off += bytesRead;
      progress(bytesRead);
    }
    // Grown since the stat: the sample table (built from the shard as it was) may not fit it.
    if (!stopped() && (await fh.stat()).size !== bytes) throw new ShardMemoryError(`the shard changed size while loading (${bytes} bytes at the start)`, path);
  } finally {
    await fh.close();
  }
  return sab;
}
