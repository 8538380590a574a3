// ImageNet-1k. Train is an ImageFolder of synset folders. Val is one flat folder plus a labels
// file, either Kaggle's LOC_val_solution.csv ("ImageId,PredictionString" whose first token is
// the synset) or plain lines "<file name> <synset or class index>". Val classes default to the
// sorted synsets in the labels file, which for the full 1000 equals train's folder order.
import { readFile } from 'node:fs/promises';
import { basename, extname } from 'node:path';
import { FileCatalog } from './catalog.ts';
import { requireDir, requireFile } from './check-path.ts';
import { openImageFolder } from './imagefolder.ts';
import { expectPaths, SourceError, type CatalogSource, type SourceDefinition } from './types.ts';
import { byCodePoint, listFilesRecursive } from './walk.ts';

export interface ImageNetOptions {
  labels?: string;
  classes?: string[];
}

export async function openImageNet(root: string, o: ImageNetOptions = {}): Promise<CatalogSource> {
  if (!o.labels) return openImageFolder(root, { kind: 'imagenet', ...(o.classes ? { classes: o.classes } : {}) });
  await requireDir(root, 'ImageNet val folder');
  await requireFile(o.labels, 'labels file');
  const byStem = parseLabels(await readFile(o.labels, 'utf8'), o.labels);
  const classes = o.classes ?? defaultClasses([...byStem.values()]);
  const classIndex = new Map(classes.map((c, i) => [c, i]));
  const catalog = new FileCatalog();
  const container = catalog.addContainer(root);
  const listingErrors: { file: string; reason: string }[] = [];
  for (const f of await listFilesRecursive(root)) {
    const stem = basename(f, extname(f));
    const raw = byStem.get(stem);
    if (raw === undefined) {
      listingErrors.push({ file: `${root}/${f}`, reason: 'no entry in the labels file; skipped' });
      continue;
    }
    const label = /^\d+$/.test(raw) ? Number(raw) : classIndex.get(raw);
    if (label === undefined || label >= classes.length) {
      listingErrors.push({ file: `${root}/${f}`, reason: `label ${raw} is not a known class; skipped` });
      continue;
    }
    catalog.addFile(container, f, label);
  }
  if (catalog.count === 0) throw new SourceError('no labelled images found', root);
  return {
    mode: 'catalog',
    kind: 'imagenet',
    classes,
    channels: 3,
    count: catalog.count,
    shuffle: true,
    listingErrors,
    description: `imagenet val ${root} (labels ${o.labels}): ${catalog.count} images, ${classes.length} classes`,
    load: (indices) => catalog.load(indices),
  };
}

/** Sorted synsets; or "0".."max" when the file gives class indices. */
function defaultClasses(values: string[]): string[] {
  if (values.every((v) => /^\d+$/.test(v))) {
    const max = Math.max(...values.map(Number));
    return Array.from({ length: max + 1 }, (_, i) => String(i));
  }
  return [...new Set(values.filter((v) => !/^\d+$/.test(v)))].sort(byCodePoint);
}

/** File stem -> synset (or decimal class index). */
export function parseLabels(text: string, file: string): Map<string, string> {
  const out = new Map<string, string>();
  const lines = text.split(/\r?\n/);
  const csv = /^ImageId\s*,\s*PredictionString/i.test(lines[0] ?? '');
  for (let i = csv ? 1 : 0; i < lines.length; i++) {
    const line = lines[i]!.trim();
    if (!line || line.startsWith('#')) continue;
    const parts = csv ? line.split(',') : line.split(/\s+/);
    const name = parts[0];
    const label = csv ? parts[1]?.trim().split(/\s+/)[0] : parts[1];
    if (!name || !label) throw new SourceError(`line ${i + 1}: expected "<file> <label>", got "${line}"`, file);
    out.set(basename(name, extname(name)), label);
  }
  if (out.size === 0) throw new SourceError('labels file is empty', file);
  return out;
}

export const imageNetSource: SourceDefinition = {
  kind: 'imagenet',
  args: '<dir>',
  help: 'train: synset folders; val: flat folder + --labels <file>',
  open: (o) => {
    expectPaths(o.kind, o.paths, 1, 'one folder (train: synset folders; val: images + --labels)');
    return openImageNet(o.paths[0]!, { ...(o.labels ? { labels: o.labels } : {}), ...(o.classes ? { classes: o.classes } : {}) });
  },
};
