import t from 'tap';
import { openSource, SOURCE_KINDS, SOURCES, sourcesHelp } from '../../../src/pipeline/sources/open-source.ts';
import { SourceError } from '../../../src/pipeline/sources/types.ts';

t.test('one registration per source: name, help line and opener', async (t) => {
  t.same(SOURCE_KINDS, ['imagefolder', 'imagenet21k', 'imagenet', 'cifar10', 'cifar100', 'idx', 'webdataset', 'synthetic']);
  t.equal(new Set(SOURCE_KINDS).size, SOURCE_KINDS.length, 'names are unique');
  const help = sourcesHelp().split('\n');
  for (const s of SOURCES)
    t.ok(
      help.some((l) => l.startsWith(`  ${s.kind}${s.args ? ` ${s.args}` : ''} `)),
      `${s.kind} has its help line`,
    );
  // A multi-line help continues aligned under the first line's text.
  const wds = help.findIndex((l) => l.startsWith('  webdataset '));
  t.equal(help[wds + 1]!.indexOf('brace'), help[wds]!.indexOf('re-shard'));
});

t.test('openSource dispatches by name and checks arguments', async (t) => {
  await t.rejects(
    openSource({ kind: 'nope', paths: [], split: 'train', seed: 0, res: 8 }),
    new SourceError('unknown source kind "nope"; expected one of: imagefolder, imagenet21k, imagenet, cifar10, cifar100, idx, webdataset, synthetic'),
  );
  await t.rejects(openSource({ kind: 'idx', paths: ['a'], split: 'train', seed: 0, res: 8 }), /idx takes <images-idx> <labels-idx>; got a/);
  await t.rejects(openSource({ kind: 'cifar10', paths: ['x'], split: 'val', seed: 0, res: 8 }), /cifar10: --split must be train or test, got "val"/);
  const s = await openSource({ kind: 'synthetic', paths: [], split: 'train', seed: 1, res: 8, count: 5, numClasses: 2 });
  t.equal(s.kind, 'synthetic');
  t.equal(s.classes.length, 2);
});
