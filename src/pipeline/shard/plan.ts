// The one-time plan of a job run as tasks: the source listed once, and its items recorded in
// output order, so that N tasks (on N machines) read their slice of the plan instead of each
// listing 13M files. In the job state:
//   plan.json        the command's request (to check tasks against), the fingerprint, what the
//                    task needs to stand in for the source (kind, count, channels ...), and
//   plan-items.bin   every item of every split in output order (position p = key p of the
//                    primary split, then the val split), as columns, so a task reads only the
//                    byte ranges of its positions.
// plus the job file and layout every task agrees on. Sources whose items are in-memory pixels
// (idx, CIFAR) or a stream (webdataset) get a plan without items: their "listing" is reading
// the data itself, which a task then does, checked against the plan's fingerprint.
import { endianness } from 'node:os';
import type { CatalogSource, Item, LoadedItems, Source, SyntheticParams } from '../sources/types.ts';
import { ShardJobError } from './errors.ts';
import { PARTIAL_DIR } from './job-state.ts';
import { LAYOUT_FILE, LocalOutputStore, prepareTaskOutput, type OutputStore } from './output-store.ts';
import { describeJob, type JobLayout, type ShardJobOptions } from './shard-job.ts';
import { ownedShardRanges, shardCount, type ShardTaskId } from './task-id.ts';

export const PLAN_FILE = 'plan.json';
export const PLAN_ITEMS_FILE = 'plan-items.bin';
const PLAN_VERSION = 1;
const MAGIC = 'SMLPPLN1';
const HEADER = 32;
const BOM = 0x01020304;

export interface PlanFile {
  version: number;
  fingerprint: string;
  /** The command's source and options, as the command describes them; a task's must be equal. */
  request: unknown;
  /** What a task needs to stand in for the source (the rest is in the layout). */
  source: { kind: string; count: number | null; channels: 1 | 3; synthetic?: SyntheticParams };
  /** The recorded items, or null when tasks read the source itself (see above). */
  items: { count: number; bytes: number; prefixes: string[]; invalid: Record<string, string> } | null;
  command: string;
}

export interface Plan {
  file: PlanFile;
  layout: JobLayout;
}

export interface PlanSummary {
  out: string;
  state: 'planned' | 'complete';
  items: number;
  /** Whether tasks read items from the plan (else they read the source, which is cheap for it). */
  recordedItems: boolean;
  splits: { name: string; count: number; shards: number }[];
  seconds: number;
}

const KIND_FILE = 0;
const KIND_RANGE = 1;
const KIND_SYNTHETIC = 2;

/** Byte offsets of the columns of a file of `n` items. */
function columns(n: number): { labels: number; kinds: number; prefixes: number; offsets: number; sizes: number; nameEnds: number; names: number } {
  const labels = HEADER;
  const kinds = labels + 4 * n;
  const prefixes = kinds + n;
  const offsets = prefixes + 4 * n;
  const sizes = offsets + 8 * n;
  const nameEnds = sizes + 8 * n;
  return { labels, kinds, prefixes, offsets, sizes, nameEnds, names: nameEnds + 8 * n };
}

class ItemColumns {
  readonly labels: Int32Array;
  readonly kinds: Uint8Array;
  readonly prefixIds: Uint32Array;
  readonly offsets: Float64Array;
  readonly sizes: Float64Array;
  readonly nameEnds: Float64Array;
  private names = Buffer.alloc(1 << 20);
  private nameLength = 0;
  private readonly prefixIndex = new Map<string, number>();
  readonly prefixes: string[] = [];
  readonly invalid: Record<string, string> = {};
  length = 0;

  constructor(readonly n: number) {
    this.labels = new Int32Array(n);
    this.kinds = new Uint8Array(n);
    this.prefixIds = new Uint32Array(n);
    this.offsets = new Float64Array(n);
    this.sizes = new Float64Array(n);
    this.nameEnds = new Float64Array(n);
  }

  /** False when the item cannot be recorded exactly (the plan then records no items). */
  add(item: Item): boolean {
    const i = this.length;
    let prefix: string;
    const ref = item.ref;
    if (ref.kind === 'file') {
      if (ref.path !== item.name) return false;
      prefix = item.name.slice(0, item.name.lastIndexOf('/') + 1);
      this.kinds[i] = KIND_FILE;
    } else if (ref.kind === 'range') {
      prefix = `${ref.path}#`;
      if (!item.name.startsWith(prefix)) return false;
      this.kinds[i] = KIND_RANGE;
      this.offsets[i] = ref.offset;
      this.sizes[i] = ref.size;
    } else if (ref.kind === 'synthetic') {
      prefix = item.name.slice(0, item.name.lastIndexOf('[') + 1);
      this.kinds[i] = KIND_SYNTHETIC;
      this.offsets[i] = ref.index;
    } else {
      return false;
    }
    if (!Number.isSafeInteger(item.label) || item.label < -(2 ** 31) || item.label >= 2 ** 31) return false;
    this.labels[i] = item.label;
    let id = this.prefixIndex.get(prefix);
    if (id === undefined) {
      id = this.prefixes.length;
      this.prefixes.push(prefix);
      this.prefixIndex.set(prefix, id);
    }
    this.prefixIds[i] = id;
    const suffix = item.name.slice(prefix.length);
    const needed = Buffer.byteLength(suffix);
    if (this.nameLength + needed > this.names.length) {
      const next = Buffer.alloc(Math.max(this.names.length * 2, this.nameLength + needed));
      this.names.copy(next, 0, 0, this.nameLength);
      this.names = next;
    }
    this.nameLength += this.names.write(suffix, this.nameLength);
    this.nameEnds[i] = this.nameLength;
    if (item.invalid !== undefined) this.invalid[String(i)] = item.invalid;
    this.length++;
    return true;
  }

  encode(): Uint8Array {
    const c = columns(this.n);
    const out = new Uint8Array(c.names + this.nameLength);
    out.set(Buffer.from(MAGIC, 'latin1'), 0);
    const view = new DataView(out.buffer);
    view.setUint32(8, BOM, true);
    view.setUint32(12, PLAN_VERSION, true);
    view.setFloat64(16, this.n, true);
    view.setFloat64(24, this.nameLength, true);
    const put = (a: ArrayBufferView, at: number): void => out.set(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), at);
    put(this.labels, c.labels);
    put(this.kinds, c.kinds);
    put(this.prefixIds, c.prefixes);
    put(this.offsets, c.offsets);
    put(this.sizes, c.sizes);
    put(this.nameEnds, c.nameEnds);
    out.set(this.names.subarray(0, this.nameLength), c.names);
    return out;
  }
}

/** Every item of `source` in output order, or null when some item cannot be recorded. */
async function recordItems(source: CatalogSource, positions: Uint32Array[], total: number): Promise<ItemColumns | null> {
  const cols = new ItemColumns(total);
  const CHUNK = 65536;
  for (const order of positions) {
    for (let a = 0; a < order.length; a += CHUNK) {
      const loaded: LoadedItems = await source.load(order.subarray(a, Math.min(order.length, a + CHUNK)));
      if (loaded.pixels || loaded.payload) return null;
      for (const item of loaded.items) if (!cols.add(item)) return null;
    }
  }
  return cols;
}

/**
 * Lists nothing itself: `source` is the opened source. Records the plan in the output (which the
 * caller holds the folder lock of). A plan of the same job already there is replaced (the same
 * listing gives the same plan); one of another job is an error.
 */
export async function writePlan(source: Source, o: ShardJobOptions, request: unknown): Promise<PlanSummary> {
  const started = performance.now();
  const job = describeJob(source, o);
  const store = o.store ?? new LocalOutputStore(o.out);
  if (job.splits.some((s) => s.count === null)) {
    throw new ShardJobError(
      'a plan needs the number of items up front: re-shard a webdataset source from its index .json (which counts the samples), not from shard URLs',
    );
  }
  const splits = job.splits.map((s) => ({ name: s.name, count: s.count!, shards: shardCount(s.count!, o.samplesPerShard) }));
  const total = splits.reduce((a, s) => a + s.count, 0);
  const state = await prepareTaskOutput(store, { fingerprint: job.fingerprint, layout: JSON.stringify(job.layout) }, new Set());
  if (state === 'complete') return { out: o.out, state: 'complete', items: total, recordedItems: false, splits, seconds: (performance.now() - started) / 1000 };
  const cols =
    source.mode === 'catalog'
      ? await recordItems(
          source,
          job.splits.map((s) => s.order!),
          total,
        )
      : null;
  const encoded = cols?.encode();
  if (encoded) await store.writeState(PLAN_ITEMS_FILE, encoded);
  const file: PlanFile = {
    version: PLAN_VERSION,
    fingerprint: job.fingerprint,
    request,
    source: { kind: source.kind, count: source.count, channels: source.channels, ...(source.synthetic ? { synthetic: source.synthetic } : {}) },
    items: cols && encoded ? { count: total, bytes: encoded.length, prefixes: cols.prefixes, invalid: cols.invalid } : null,
    command: o.command,
  };
  // Last: a plan counts only once plan.json is there, so a killed plan step leaves none.
  await store.writeState(PLAN_FILE, `${JSON.stringify(file)}\n`);
  return { out: o.out, state: 'planned', items: total, recordedItems: cols !== null, splits, seconds: (performance.now() - started) / 1000 };
}

export async function readPlan(store: OutputStore): Promise<Plan | null> {
  const text = await store.readState(PLAN_FILE);
  if (text === null) return null;
  const where = `${store.location}/${PARTIAL_DIR}/${PLAN_FILE}`;
  let file: PlanFile;
  try {
    file = JSON.parse(text) as PlanFile;
  } catch (e) {
    throw new ShardJobError(`is not a plan (${(e as Error).message})`, where);
  }
  if (file.version !== PLAN_VERSION)
    throw new ShardJobError(`is a plan of version ${file.version}; this tool reads version ${PLAN_VERSION}: make the plan again`, where);
  const layoutText = await store.readState(LAYOUT_FILE);
  const layout = layoutText === null ? null : (JSON.parse(layoutText) as JobLayout);
  if (!layout || layout.fingerprint !== file.fingerprint)
    throw new ShardJobError(`belongs to another job than ${PARTIAL_DIR}/${LAYOUT_FILE}: make the plan again`, where);
  return { file, layout };
}

/**
 * The positions [p0, p1) of the plan's items that task `task` writes (all of them without a
 * task): a task's shards are one block of the job's shard list, so one range of positions.
 */
export function planRange(layout: JobLayout, task: Pick<ShardTaskId, 'index' | 'count'> | null): [number, number] {
  const S = layout.samplesPerShard;
  const counts = layout.splits.map((s) => s.count ?? 0);
  const total = counts.reduce((a, b) => a + b, 0);
  if (!task) return [0, total];
  const ranges = ownedShardRanges(
    counts.map((c) => shardCount(c, S)),
    task,
  );
  let base = 0;
  let p0 = -1;
  let p1 = -1;
  counts.forEach((c, i) => {
    const [lo, hi] = ranges[i]!;
    if (lo < hi) {
      if (p0 < 0) p0 = base + lo * S;
      p1 = base + Math.min(c, hi * S);
    }
    base += c;
  });
  return p0 < 0 ? [0, 0] : [p0, p1];
}

/**
 * A source that stands in for the planned one: the same identity (kind, description, count,
 * classes ...) and the recorded items of positions [p0, p1), read from the plan's item file
 * alone. Its order is the identity (the plan's items are already in output order), and it
 * loads position p as the planned source loaded the item at position p.
 */
export async function planSource(store: OutputStore, plan: Plan, [p0, p1]: [number, number]): Promise<CatalogSource> {
  const { file, layout } = plan;
  if (!file.items || file.source.count === null) throw new ShardJobError('this plan records no items; open the source itself', store.location);
  const items = file.items;
  const where = `${store.location}/${PARTIAL_DIR}/${PLAN_ITEMS_FILE}`;
  if (endianness() !== 'LE') throw new ShardJobError('plan item files are little-endian; this machine is not', where);
  const n = items.count;
  const header = await store.readStateBytes(PLAN_ITEMS_FILE, 0, HEADER);
  const hv = new DataView(header.buffer, header.byteOffset, header.byteLength);
  if (Buffer.from(header.subarray(0, 8)).toString('latin1') !== MAGIC || hv.getUint32(8, true) !== BOM || hv.getFloat64(16, true) !== n) {
    throw new ShardJobError(`is not the item file of this plan (${n} items)`, where);
  }
  const c = columns(n);
  const m = p1 - p0;
  const read = async (at: number, width: number, first = p0, count = m): Promise<ArrayBuffer> =>
    (await store.readStateBytes(PLAN_ITEMS_FILE, at + first * width, count * width)).buffer as ArrayBuffer;
  const labels = new Int32Array(await read(c.labels, 4));
  const kinds = new Uint8Array(await read(c.kinds, 1));
  const prefixIds = new Uint32Array(await read(c.prefixes, 4));
  const offsets = new Float64Array(await read(c.offsets, 8));
  const sizes = new Float64Array(await read(c.sizes, 8));
  // One more end before the range: where the range's first name starts.
  let ends: Float64Array;
  if (p0 > 0) ends = new Float64Array(await read(c.nameEnds, 8, p0 - 1, m + 1));
  else {
    ends = new Float64Array(m + 1);
    ends.set(new Float64Array(await read(c.nameEnds, 8)), 1);
  }
  const nameStart = ends[0]!;
  const names = Buffer.from(await store.readStateBytes(PLAN_ITEMS_FILE, c.names + nameStart, (m > 0 ? ends[m]! : nameStart) - nameStart));
  const item = (p: number): Item => {
    if (!(p >= p0 && p < p1)) throw new ShardJobError(`position ${p} is outside this task's part of the plan [${p0}, ${p1})`, where);
    const i = p - p0;
    const name = items.prefixes[prefixIds[i]!]! + names.toString('utf8', ends[i]! - nameStart, ends[i + 1]! - nameStart);
    const invalid = items.invalid[String(p)];
    const base = { label: labels[i]!, name, ...(invalid !== undefined ? { invalid } : {}) };
    const prefix = items.prefixes[prefixIds[i]!]!;
    switch (kinds[i]) {
      case KIND_FILE:
        return { ...base, ref: { kind: 'file', path: name } };
      case KIND_RANGE:
        return { ...base, ref: { kind: 'range', path: prefix.slice(0, -1), offset: offsets[i]!, size: sizes[i]! } };
      case KIND_SYNTHETIC:
        return { ...base, ref: { kind: 'synthetic', index: offsets[i]! } };
      default:
        throw new ShardJobError(`item ${p} has an unknown kind ${kinds[i]}`, where);
    }
  };
  return {
    mode: 'catalog',
    kind: file.source.kind,
    classes: layout.classes,
    channels: file.source.channels,
    description: layout.description,
    listingErrors: layout.listingErrors,
    ...(file.source.synthetic ? { synthetic: file.source.synthetic } : {}),
    shuffle: false,
    count: file.source.count,
    load(indices) {
      const out: Item[] = [];
      for (let k = 0; k < indices.length; k++) out.push(item(indices[k]!));
      return Promise.resolve({ items: out });
    },
  };
}

/**
 * A task's source and options must make the plan's job: the same fingerprint (source identity,
 * count, format, shard size, seed, splits). Throws naming both descriptions otherwise.
 */
export function assertMatchesPlan(source: Source, o: ShardJobOptions, plan: Plan): void {
  const mine = describeJob(source, o).fingerprint;
  if (mine === plan.file.fingerprint) return;
  throw new ShardJobError(
    `this task's source or options make another job than the plan in ${PARTIAL_DIR}/${PLAN_FILE}:\n  plan: ${plan.file.fingerprint}\n  task: ${mine}\nrun the task with the plan's source and options (or with none: a task given only --out and --task takes them from the plan)`,
    o.out,
  );
}
