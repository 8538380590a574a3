// From a CLI-level description (kind + paths + options) to an opened Source.
import { readFile } from 'node:fs/promises';
import { openCifar } from './cifar.ts';
import { openIdx } from './idx.ts';
import { openImageFolder } from './imagefolder.ts';
import { openImageNet } from './imagenet.ts';
import { openImageNet21k } from './imagenet21k.ts';
import { openSynthetic } from './synthetic.ts';
import { SourceError, SOURCE_KINDS, type Source, type SourceKind } from './types.ts';
import { openWebDataset } from './webdataset-source.ts';

export interface OpenSourceOptions {
  kind: string;
  paths: string[];
  split: string;
  seed: number;
  res: number;
  channels?: 1 | 3;
  labels?: string;
  classesFile?: string;
  minPerClass?: number;
  cifarLabels?: 'fine' | 'coarse';
  count?: number;
  numClasses?: number;
  imageSize?: { width: number; height: number };
  onListing?: (done: number, total: number) => void;
}

function expectPaths(kind: string, paths: string[], n: number, usage: string): void {
  if (paths.length !== n) throw new SourceError(`${kind} takes ${usage}; got ${paths.length === 0 ? 'none' : paths.join(' ')}`);
}

/** A class list from a text file (one per line) or from a dataset index's `classes`. */
export async function readClassList(file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8').catch(() => {
    throw new SourceError('class list does not exist', file);
  });
  if (file.endsWith('.json')) {
    const classes = (JSON.parse(text) as { classes?: unknown }).classes;
    if (!Array.isArray(classes)) throw new SourceError('has no "classes" array', file);
    return classes.map(String);
  }
  return text.split(/\r?\n/).map((l) => l.trim()).filter(Boolean);
}

export async function openSource(o: OpenSourceOptions): Promise<Source> {
  if (!SOURCE_KINDS.includes(o.kind as SourceKind)) {
    throw new SourceError(`unknown source kind "${o.kind}"; expected one of: ${SOURCE_KINDS.join(', ')}`);
  }
  const kind = o.kind as SourceKind;
  const classes = o.classesFile ? await readClassList(o.classesFile) : undefined;
  switch (kind) {
    case 'imagefolder':
      expectPaths(kind, o.paths, 1, 'one folder (root/<class>/<image>)');
      return openImageFolder(o.paths[0]!, { ...(classes ? { classes } : {}), ...(o.minPerClass !== undefined ? { minPerClass: o.minPerClass } : {}) });
    case 'imagenet21k':
      expectPaths(kind, o.paths, 1, 'one folder of synset folders or synset .tar files');
      return openImageNet21k(o.paths[0]!, {
        ...(o.minPerClass !== undefined ? { minPerClass: o.minPerClass } : {}),
        ...(o.onListing ? { onProgress: o.onListing } : {}),
      });
    case 'imagenet':
      expectPaths(kind, o.paths, 1, 'one folder (train: synset folders; val: images + --labels)');
      return openImageNet(o.paths[0]!, { ...(o.labels ? { labels: o.labels } : {}), ...(classes ? { classes } : {}) });
    case 'cifar10':
    case 'cifar100':
      expectPaths(kind, o.paths, 1, 'the binary-version tarball or its folder');
      if (o.split !== 'train' && o.split !== 'test') throw new SourceError(`${kind}: --split must be train or test, got "${o.split}"`);
      return openCifar(o.paths[0]!, { variant: kind, split: o.split, ...(o.cifarLabels ? { labels: o.cifarLabels } : {}) });
    case 'idx':
      expectPaths(kind, o.paths, 2, '<images-idx> <labels-idx>');
      return openIdx(o.paths[0]!, o.paths[1]!);
    case 'webdataset':
      return openWebDataset(o.paths, o.channels);
    case 'synthetic': {
      if (o.paths.length) throw new SourceError(`synthetic takes no paths; got ${o.paths.join(' ')}`);
      const size = o.imageSize ?? { width: o.res, height: o.res };
      return openSynthetic({ count: o.count ?? 10000, numClasses: o.numClasses ?? 10, width: size.width, height: size.height, seed: o.seed });
    }
  }
}
