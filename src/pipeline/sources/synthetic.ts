import { SourceError, type CatalogSource, type Item, type SourceDefinition } from './types.ts';
import { syntheticLabel } from './synthetic-image.ts';

export interface SyntheticOptions {
  count: number;
  numClasses: number;
  width: number;
  height: number;
  seed: number;
}

export function openSynthetic(o: SyntheticOptions): CatalogSource {
  const classes = Array.from({ length: o.numClasses }, (_, i) => `class${String(i).padStart(3, '0')}`);
  return {
    mode: 'catalog',
    kind: 'synthetic',
    classes,
    channels: 3,
    count: o.count,
    shuffle: true,
    listingErrors: [],
    description: `synthetic: ${o.count} images, ${o.numClasses} classes, ${o.width}x${o.height}, seed ${o.seed}`,
    synthetic: { seed: o.seed, numClasses: o.numClasses, width: o.width, height: o.height },
    load(indices) {
      const items: Item[] = [];
      for (let k = 0; k < indices.length; k++) {
        const index = indices[k]!;
        items.push({
          label: syntheticLabel(index, o.numClasses),
          name: `synthetic[${index}]`,
          ref: { kind: 'synthetic', index },
        });
      }
      return Promise.resolve({ items });
    },
  };
}

export const syntheticSource: SourceDefinition = {
  kind: 'synthetic',
  args: '',
  help: 'generated images with learnable classes (no download)',
  open: (o) => {
    if (o.paths.length) throw new SourceError(`synthetic takes no paths; got ${o.paths.join(' ')}`);
    const size = o.imageSize ?? { width: o.res, height: o.res };
    return openSynthetic({ count: o.count ?? 10000, numClasses: o.numClasses ?? 10, width: size.width, height: size.height, seed: o.seed });
  },
};
