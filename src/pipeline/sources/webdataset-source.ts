// Re-sharding existing WebDataset shards (ours or anyone's): each sample's image member (npy or
// an encoded image) and its `cls` label are streamed in order from local paths or URLs. Order is
// kept (the shards were shuffled when written), so no catalog of the dataset is needed.
import { decodeCls, LABEL_EXTS } from '../webdataset/codecs.ts';
import { expandUrls } from '../webdataset/urls.ts';
import { webdataset, type WdsSample } from '../webdataset/open-url.ts';
import { readWidsIndex } from '../webdataset/wids-index.ts';
import { labelProblem, SourceError, type Item, type SourceDefinition, type StreamSource } from './types.ts';

const IMAGE_EXTS = ['npy', 'jpg', 'jpeg', 'png', 'webp', 'gif', 'tif', 'tiff'];

export async function openWebDataset(specs: string[], channels?: 1 | 3): Promise<StreamSource> {
  if (specs.length === 0) throw new SourceError('webdataset: give shard URLs or an index .json');
  let urls: string[];
  let classes: string[] = [];
  let count: number | null = null;
  let indexChannels: number | undefined;
  if (specs.length === 1 && specs[0]!.endsWith('.json')) {
    const index = await readWidsIndex(specs[0]!);
    urls = index.resolvedUrls;
    count = index.shardlist.reduce((a, s) => a + s.nsamples, 0);
    if (Array.isArray(index['classes'])) classes = (index['classes'] as unknown[]).map(String);
    if (typeof index['channels'] === 'number') indexChannels = index['channels'];
  } else {
    urls = expandUrls(specs);
  }
  if (urls.length === 0) throw new SourceError(`webdataset: no shard URLs in ${specs.join(' ')}`);
  const ch: 1 | 3 = channels ?? (indexChannels === 1 ? 1 : 3);
  return {
    mode: 'stream',
    kind: 'webdataset',
    classes,
    channels: ch,
    count,
    shuffle: false,
    listingErrors: [],
    description: `webdataset ${urls.length} shards (${urls[0]}${urls.length > 1 ? ' ...' : ''})${count !== null ? `, ${count} samples` : ''}`,
    async *iterate(skip: number) {
      let seen = 0;
      for await (const sample of webdataset(urls)) {
        if (seen++ < skip) continue;
        yield toItem(sample);
      }
    },
  };
}

/**
 * A sample as a shard-job item. A sample the job cannot use (no image member: absent, or a link,
 * which carries no data; no label, or a label that is not a class index) becomes an invalid item:
 * skipped and listed in errors.jsonl like an undecodable image, instead of ending the job.
 */
function toItem(sample: WdsSample): { item: Item; bytes: Uint8Array } {
  const where = `${sample.__url__}#${sample.__key__}`;
  const imageExt = IMAGE_EXTS.find((e) => sample[e] instanceof Uint8Array);
  const labelExt = LABEL_EXTS.find((e) => sample[e] instanceof Uint8Array);
  const invalid = (reason: string): { item: Item; bytes: Uint8Array } => ({
    item: { label: 0, name: where, ref: { kind: 'payload-encoded', offset: 0, size: 0 }, invalid: reason },
    bytes: new Uint8Array(0),
  });
  if (!imageExt) return invalid(`sample has no image member (looked for ${IMAGE_EXTS.join(', ')}; links carry no data)`);
  if (!labelExt) return invalid(`sample has no label member (looked for ${LABEL_EXTS.join(', ')})`);
  let label: number;
  try {
    label = decodeCls(sample[labelExt] as Uint8Array, { url: sample.__url__, key: sample.__key__ });
  } catch (e) {
    return invalid((e as Error).message);
  }
  const bad = labelProblem(label);
  if (bad) return invalid(bad);
  const bytes = sample[imageExt] as Uint8Array;
  return {
    item: { label, name: where, ref: { kind: 'payload-encoded', offset: 0, size: bytes.length } },
    bytes,
  };
}

export const webDatasetSource: SourceDefinition = {
  kind: 'webdataset',
  args: '<url...|idx.json>',
  help: "re-shard / re-size existing shards (local paths or http(s)://,\nbrace patterns like data-{000000..000099}.tar, '::' lists)",
  open: (o) => openWebDataset(o.paths, o.channels),
};
