// The contract between dataset sources and the shard job. A source turns a dataset on disk into
// labelled items; a worker turns an item into a shard sample. Items are plain data so they can
// cross to piscina worker threads.
import { PathError } from '../errors.ts';

/** Where an item's bytes are. Offsets of `payload` refs point into the task's payload buffer. */
export type ItemRef =
  | { kind: 'file'; path: string }
  | { kind: 'range'; path: string; offset: number; size: number }
  | { kind: 'payload-encoded'; offset: number; size: number }
  | { kind: 'payload-pixels'; offset: number; width: number; height: number; channels: 1 | 3; layout: 'hwc' | 'chw' }
  | { kind: 'synthetic'; index: number };

export interface Item {
  label: number;
  /** Human-readable origin for error reports: a path, `archive.tar#member` or `file[index]`. */
  name: string;
  ref: ItemRef;
  /** Why the source already knows this item is bad (no image member, a bad label): skipped and listed. */
  invalid?: string;
}

/**
 * Labels are class indices in [0, MAX_LABEL): enough for ImageNet-21k's 21,841 classes many times
 * over, and small enough that a class list sized by the largest label stays bounded whatever a
 * damaged or hostile label file declares.
 */
export const MAX_LABEL = 1 << 20;

/** Why `label` is not a usable class index, or null when it is. */
export function labelProblem(label: number): string | null {
  if (!Number.isSafeInteger(label)) return `class label ${label} is not an integer`;
  if (label < 0 || label >= MAX_LABEL) return `class label ${label} is out of range [0, ${MAX_LABEL})`;
  return null;
}

/**
 * Many same-sized in-memory images (idx, CIFAR) as typed arrays instead of one object per
 * image: building, cloning and collecting those objects made the main thread the shard job's
 * bottleneck on these fast sources. Image k's pixels are at payload[k * w * h * c].
 */
export interface PixelBatch {
  count: number;
  labels: Int32Array;
  /** Position of each image in its source file, for error reports. */
  sourceIndex: Uint32Array;
  width: number;
  height: number;
  channels: 1 | 3;
  layout: 'hwc' | 'chw';
  /** Error reports name image k as `${name}[${sourceIndex[k]}]`. */
  name: string;
}

export interface LoadedItems {
  items: Item[];
  /** Set instead of `items` by in-memory pixel sources. */
  pixels?: PixelBatch;
  /** Bytes referenced by `payload-*` refs (or the pixel batch); transferred, not copied. */
  payload?: Uint8Array;
}

/** Copies the images at `indices` (one `record(i)` of w*h*c bytes each) into a batch. */
export function gatherPixels(
  indices: ArrayLike<number>,
  geometry: Omit<PixelBatch, 'count' | 'labels' | 'sourceIndex'>,
  record: (i: number) => Uint8Array,
  label: (i: number) => number,
): LoadedItems {
  const size = geometry.width * geometry.height * geometry.channels;
  const payload = new Uint8Array(indices.length * size);
  const pixels: PixelBatch = { ...geometry, count: indices.length, labels: new Int32Array(indices.length), sourceIndex: Uint32Array.from(indices) };
  for (let k = 0; k < indices.length; k++) {
    const i = indices[k]!;
    payload.set(record(i), k * size);
    pixels.labels[k] = label(i);
  }
  return { items: [], pixels, payload };
}

/** The k-th image of a pixel batch as an ordinary item. */
export function pixelItem(b: PixelBatch, k: number): Item {
  return {
    label: b.labels[k]!,
    name: `${b.name}[${b.sourceIndex[k]}]`,
    ref: { kind: 'payload-pixels', offset: k * b.width * b.height * b.channels, width: b.width, height: b.height, channels: b.channels, layout: b.layout },
  };
}

/** A source's name on the command line (`npm run shard -- <kind> ...`), as its registration gives it. */
export type SourceKind = string;

/** What the shard command knows of a source before opening it: paths and the options it may use. */
export interface SourceSpec {
  kind: string;
  paths: string[];
  split: string;
  seed: number;
  res: number;
  channels?: 1 | 3;
  labels?: string;
  /** A fixed class list (--classes), already read. */
  classes?: string[];
  minPerClass?: number;
  cifarLabels?: 'fine' | 'coarse';
  count?: number;
  numClasses?: number;
  imageSize?: { width: number; height: number };
  onListing?: (done: number, total: number) => void;
}

/**
 * One source's registration: its name, its line in `npm run shard -- --help`, and how to open it.
 * Adding a source is a file exporting one of these and one line in open-source.ts's list.
 */
export interface SourceDefinition {
  kind: string;
  /** The positional arguments it takes, for the help line (e.g. "<dir>"). */
  args: string;
  /** One line of help (continuation lines are indented by the caller). */
  help: string;
  open(spec: SourceSpec): Promise<Source> | Source;
}

/** Checks the number of paths a source was given. */
export function expectPaths(kind: string, paths: string[], n: number, usage: string): void {
  if (paths.length !== n) throw new SourceError(`${kind} takes ${usage}; got ${paths.length === 0 ? 'none' : paths.join(' ')}`);
}

export interface SyntheticParams {
  seed: number;
  numClasses: number;
  width: number;
  height: number;
}

interface SourceBase {
  kind: SourceKind;
  /** Class names; the label of class `classes[i]` is i. */
  classes: string[];
  channels: 1 | 3;
  /** One line for logs and the index's `source` field. */
  description: string;
  /** Files (or skipped classes, ...) the source itself dropped while listing, with why. */
  listingErrors: { file: string; reason: string }[];
  synthetic?: SyntheticParams;
  /** Shuffle before writing: true for class-ordered sources. */
  shuffle: boolean;
}

/** A source whose items are known up front and can be loaded in any order. */
export interface CatalogSource extends SourceBase {
  mode: 'catalog';
  count: number;
  load(indices: ArrayLike<number>): Promise<LoadedItems>;
  close?(): Promise<void>;
}

/** A source that can only be read in order (re-sharding WebDataset URLs). */
export interface StreamSource extends SourceBase {
  mode: 'stream';
  count: number | null;
  /** Items in order; `skip` items are read past without being loaded when resuming. */
  iterate(skip: number): AsyncIterable<{ item: Item; bytes: Uint8Array }>;
}

export type Source = CatalogSource | StreamSource;

export class SourceError extends PathError {}
