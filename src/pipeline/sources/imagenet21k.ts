// ImageNet-21k as released: one folder or one tar (n01234567.tar, JPEGs inside) per synset.
// Tars are indexed by a header walk (no image data is read), so listing 21k tars costs seconds
// of seeks, not a pass over 1.3 TB. Synset ids are the class names, sorted.
import { readdir } from 'node:fs/promises';
import { scanTarFile } from '../webdataset/tar-reader.ts';
import { FileCatalog } from './catalog.ts';
import { requireDir } from './check-path.ts';
import { expectPaths, SourceError, type CatalogSource, type SourceDefinition } from './types.ts';
import { byCodePoint, listFilesRecursive } from './walk.ts';

export interface ImageNet21kOptions {
  minPerClass?: number;
  onProgress?: (classesListed: number, classesTotal: number) => void;
}

export async function openImageNet21k(root: string, o: ImageNet21kOptions = {}): Promise<CatalogSource> {
  await requireDir(root, 'ImageNet-21k folder');
  const entries = (await readdir(root, { withFileTypes: true }))
    .filter((e) => !e.name.startsWith('.') && (e.isDirectory() || (e.isFile() && e.name.endsWith('.tar'))))
    .sort((a, b) => byCodePoint(a.name, b.name));
  if (entries.length === 0) throw new SourceError('no synset folders or synset .tar files found', root);
  const catalog = new FileCatalog();
  const classes: string[] = [];
  const listingErrors: { file: string; reason: string }[] = [];
  let done = 0;
  for (const e of entries) {
    const path = `${root}/${e.name}`;
    const synset = e.isDirectory() ? e.name : e.name.slice(0, -'.tar'.length);
    let members: { name: string; offset: number; size: number }[];
    try {
      members = e.isDirectory()
        ? (await listFilesRecursive(path)).map((name) => ({ name, offset: -1, size: -1 }))
        : (await scanTarFile(path)).filter((m) => !m.name.split('/').pop()!.startsWith('.')).map((m) => ({ name: m.name, offset: m.dataOffset, size: m.size }));
    } catch (err) {
      listingErrors.push({ file: path, reason: `unreadable synset, skipped: ${(err as Error).message}` });
      continue;
    }
    o.onProgress?.(++done, entries.length);
    if (o.minPerClass !== undefined && members.length < o.minPerClass) {
      listingErrors.push({ file: path, reason: `class dropped: ${members.length} images < --min-per-class ${o.minPerClass}` });
      continue;
    }
    if (members.length === 0) continue;
    const label = classes.length;
    classes.push(synset);
    const container = catalog.addContainer(path);
    for (const m of members) {
      if (m.offset < 0) catalog.addFile(container, m.name, label);
      else catalog.addMember(container, m.name, label, m.offset, m.size);
    }
  }
  if (catalog.count === 0) throw new SourceError('no images found in any synset', root);
  return {
    mode: 'catalog',
    kind: 'imagenet21k',
    classes,
    channels: 3,
    count: catalog.count,
    shuffle: true,
    listingErrors,
    description: `imagenet21k ${root}: ${catalog.count} images, ${classes.length} classes`,
    load: (indices) => catalog.load(indices),
  };
}

export const imageNet21kSource: SourceDefinition = {
  kind: 'imagenet21k',
  args: '<dir>',
  help: 'one folder or one <synset>.tar per synset; see --min-per-class',
  open: (o) => {
    expectPaths(o.kind, o.paths, 1, 'one folder of synset folders or synset .tar files');
    return openImageNet21k(o.paths[0]!, {
      ...(o.minPerClass !== undefined ? { minPerClass: o.minPerClass } : {}),
      ...(o.onListing ? { onProgress: o.onListing } : {}),
    });
  },
};
