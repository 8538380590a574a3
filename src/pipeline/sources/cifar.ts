// CIFAR-10/100, binary version ("cifar-10-binary.tar.gz" / "cifar-100-binary.tar.gz", or the
// folder it unpacks to). A record is 1 label byte (CIFAR-100: coarse then fine) and 3072 pixel
// bytes stored as planes (1024 R, 1024 G, 1024 B), i.e. C,H,W.
import { readFile, readdir, stat } from 'node:fs/promises';
import { openUrl } from '../webdataset/open-url.ts';
import { readTar } from '../webdataset/tar-reader.ts';
import { expectPaths, gatherPixels, SourceError, type CatalogSource, type SourceDefinition, type SourceSpec } from './types.ts';

export interface CifarOptions {
  variant: 'cifar10' | 'cifar100';
  split: 'train' | 'test';
  /** CIFAR-100 only: the 100 fine classes (default) or the 20 superclasses. */
  labels?: 'fine' | 'coarse';
}

const RECORD_PIXELS = 3072;

function wantedFiles(o: CifarOptions): { data: string[]; names: string } {
  if (o.variant === 'cifar10') {
    return {
      data: o.split === 'train' ? [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`) : ['test_batch.bin'],
      names: 'batches.meta.txt',
    };
  }
  return {
    data: [o.split === 'train' ? 'train.bin' : 'test.bin'],
    names: o.labels === 'coarse' ? 'coarse_label_names.txt' : 'fine_label_names.txt',
  };
}

async function readFromArchive(path: string, want: Set<string>): Promise<Map<string, Uint8Array>> {
  const found = new Map<string, Uint8Array>();
  for await (const entry of readTar(await openUrl(path), { url: path })) {
    const base = entry.name.split('/').pop()!;
    if (want.has(base)) found.set(base, entry.data);
  }
  return found;
}

async function readFromFolder(path: string, want: Set<string>): Promise<Map<string, Uint8Array>> {
  const found = new Map<string, Uint8Array>();
  const stack = [path];
  while (stack.length) {
    const dir = stack.pop()!;
    for (const e of await readdir(dir, { withFileTypes: true })) {
      if (e.isDirectory()) stack.push(`${dir}/${e.name}`);
      else if (want.has(e.name)) found.set(e.name, await readFile(`${dir}/${e.name}`));
    }
  }
  return found;
}

export async function openCifar(path: string, o: CifarOptions): Promise<CatalogSource> {
  const s = await stat(path).catch(() => null);
  if (!s) throw new SourceError(`${o.variant} input does not exist`, path);
  const { data, names } = wantedFiles(o);
  const want = new Set([...data, names]);
  const files = s.isDirectory() ? await readFromFolder(path, want) : await readFromArchive(path, want);
  const missing = data.filter((f) => !files.has(f));
  if (missing.length) {
    throw new SourceError(`not a ${o.variant} binary dataset: missing ${missing.join(', ')} (${o.split} split)`, path);
  }
  const labelBytes = o.variant === 'cifar10' ? 1 : 2;
  const labelAt = o.variant === 'cifar10' || o.labels === 'coarse' ? 0 : 1;
  const recordSize = labelBytes + RECORD_PIXELS;
  const records = data.map((f) => {
    const bytes = files.get(f)!;
    if (bytes.length % recordSize !== 0) {
      throw new SourceError(`${f}: size ${bytes.length} is not a multiple of the ${recordSize}-byte record`, path);
    }
    return bytes;
  });
  const all = records.length === 1 ? records[0]! : Buffer.concat(records);
  const count = all.length / recordSize;
  const nameText = files.get(names);
  let maxLabel = 0;
  for (let i = 0; i < count; i++) maxLabel = Math.max(maxLabel, all[i * recordSize + labelAt]!);
  const classes = nameText
    ? new TextDecoder()
        .decode(nameText)
        .split(/\r?\n/)
        .map((l) => l.trim())
        .filter(Boolean)
    : Array.from({ length: maxLabel + 1 }, (_, i) => String(i));
  if (maxLabel >= classes.length) throw new SourceError(`label ${maxLabel} but only ${classes.length} class names in ${names}`, path);
  return {
    mode: 'catalog',
    kind: o.variant,
    classes,
    channels: 3,
    count,
    shuffle: true,
    listingErrors: [],
    description: `${o.variant} ${o.split} ${path}: ${count} images 32x32, ${classes.length} classes`,
    load(indices) {
      return Promise.resolve(
        gatherPixels(
          indices,
          { width: 32, height: 32, channels: 3, layout: 'chw', name: `${path} ${o.split}` },
          (i) => all.subarray(i * recordSize + labelBytes, (i + 1) * recordSize),
          (i) => all[i * recordSize + labelAt]!,
        ),
      );
    },
  };
}

function openCifarSpec(variant: 'cifar10' | 'cifar100', o: SourceSpec): Promise<CatalogSource> {
  expectPaths(variant, o.paths, 1, 'the binary-version tarball or its folder');
  if (o.split !== 'train' && o.split !== 'test') throw new SourceError(`${variant}: --split must be train or test, got "${o.split}"`);
  return openCifar(o.paths[0]!, { variant, split: o.split, ...(o.cifarLabels ? { labels: o.cifarLabels } : {}) });
}

export const cifar10Source: SourceDefinition = {
  kind: 'cifar10',
  args: '<tar.gz|dir>',
  help: 'the binary version; --split train|test picks the part',
  open: (o) => openCifarSpec('cifar10', o),
};

export const cifar100Source: SourceDefinition = {
  kind: 'cifar100',
  args: '<tar.gz|dir>',
  help: 'the binary version; --cifar-labels fine|coarse',
  open: (o) => openCifarSpec('cifar100', o),
};
