// torchvision's ImageFolder layout: root/<class>/**/<image>. Classes are the sorted subfolder
// names and labels their positions, so our labels equal torchvision's for the same tree.
import { FileCatalog } from './catalog.ts';
import { requireDir } from './check-path.ts';
import { expectPaths, SourceError, type CatalogSource, type SourceDefinition, type SourceKind } from './types.ts';
import { listFilesRecursive, listSubdirs } from './walk.ts';

export interface FolderClassesOptions {
  /** Fixed class list (e.g. the train split's), so another split gets the same labels. */
  classes?: string[];
  kind?: SourceKind;
  /** Classes with fewer images are left out entirely (ImageNet-21k's rare classes). */
  minPerClass?: number;
}

export async function openImageFolder(root: string, o: FolderClassesOptions = {}): Promise<CatalogSource> {
  await requireDir(root, 'image folder');
  const folders = await listSubdirs(root);
  if (folders.length === 0) throw new SourceError('no class subfolders found (expected root/<class>/<image>)', root);
  const catalog = new FileCatalog();
  const listingErrors: { file: string; reason: string }[] = [];
  const classes = o.classes ?? [];
  const classIndex = new Map(classes.map((c, i) => [c, i]));
  for (const folder of folders) {
    const files = await listFilesRecursive(`${root}/${folder}`);
    if (o.minPerClass !== undefined && files.length < o.minPerClass) {
      listingErrors.push({ file: `${root}/${folder}`, reason: `class dropped: ${files.length} images < --min-per-class ${o.minPerClass}` });
      continue;
    }
    let label = classIndex.get(folder);
    if (label === undefined) {
      if (o.classes) {
        listingErrors.push({ file: `${root}/${folder}`, reason: 'class not in the given class list; skipped' });
        continue;
      }
      label = classes.length;
      classes.push(folder);
      classIndex.set(folder, label);
    }
    const container = catalog.addContainer(`${root}/${folder}`);
    for (const f of files) catalog.addFile(container, f, label);
  }
  if (catalog.count === 0) throw new SourceError('no images found under the class folders', root);
  return {
    mode: 'catalog',
    kind: o.kind ?? 'imagefolder',
    classes,
    channels: 3,
    count: catalog.count,
    shuffle: true,
    listingErrors,
    description: `${o.kind ?? 'imagefolder'} ${root}: ${catalog.count} files, ${classes.length} classes`,
    load: (indices) => catalog.load(indices),
  };
}

export const imageFolderSource: SourceDefinition = {
  kind: 'imagefolder',
  args: '<dir>',
  help: '<dir>/<class>/**/<image>; classes = sorted folder names (torchvision)',
  open: (o) => {
    expectPaths(o.kind, o.paths, 1, 'one folder (root/<class>/<image>)');
    return openImageFolder(o.paths[0]!, {
      ...(o.classes ? { classes: o.classes } : {}),
      ...(o.minPerClass !== undefined ? { minPerClass: o.minPerClass } : {}),
    });
  },
};
