/**
 * NVIDIA DALI's webdataset index (`.idx` beside a shard), as tools/wds2idx.py writes it and
 * fn.readers.webdataset parses it: "v1.2 <num_samples>", then one line per sample of
 * "<ext> <data_offset> <size> <member_name>" groups, offsets absolute and 512-aligned.
 */
import { WebDatasetError } from './errors.ts';
import { BLOCK } from './tar-header.ts';
import type { MemberLocation } from './tar-writer.ts';

export const DALI_INDEX_VERSION = 'v1.2';

export interface DaliComponent {
  ext: string;
  offset: number;
  size: number;
  name: string;
}

const WHITESPACE = /\s/;

/**
 * `fileOffsets` is added to every member's dataOffset: one number for all samples, or one
 * per sample (e.g. the file position each encodeSample() buffer was written at). Leave it
 * out when the locations are already absolute (TarWriter.write returns absolute ones).
 */
export function encodeDaliIndex(samples: readonly { members: readonly MemberLocation[] }[], fileOffsets?: number | readonly number[]): string {
  if (samples.length === 0) throw new WebDatasetError(`a DALI index needs at least one sample (DALI rejects a count of 0)`);
  if (Array.isArray(fileOffsets) && fileOffsets.length !== samples.length) {
    throw new WebDatasetError(`fileOffsets has ${fileOffsets.length} entries for ${samples.length} samples`);
  }
  const lines: string[] = [`${DALI_INDEX_VERSION} ${samples.length}`];
  samples.forEach((s, i) => {
    const shift = fileOffsets === undefined ? 0 : typeof fileOffsets === 'number' ? fileOffsets : (fileOffsets as readonly number[])[i]!;
    if (s.members.length === 0) throw new WebDatasetError(`sample ${i} has no members; DALI rejects empty index lines`);
    const parts: string[] = [];
    for (const m of s.members) {
      const offset = m.dataOffset + shift;
      // DALI reads the line with `>>`, so whitespace would shift every later field.
      if (WHITESPACE.test(m.ext) || WHITESPACE.test(m.name)) {
        throw new WebDatasetError(`member name ${JSON.stringify(m.name)} contains whitespace, which a DALI index cannot hold`, { member: m.name });
      }
      if (!Number.isSafeInteger(offset) || offset < 0 || offset % BLOCK !== 0) {
        throw new WebDatasetError(`data offset ${offset} is not a non-negative multiple of ${BLOCK}`, { member: m.name });
      }
      parts.push(`${m.ext} ${offset} ${m.size} ${m.name}`);
    }
    lines.push(parts.join(' '));
  });
  return `${lines.join('\n')}\n`;
}

/** Parses v1.2 (ext offset size name) and v1.1 (ext offset size; name left empty) indexes. */
export function parseDaliIndex(text: string): DaliComponent[][] {
  const lines = text.split('\n');
  const head = (lines[0] ?? '').trim().split(/\s+/);
  const version = head[0];
  if (version !== 'v1.2' && version !== 'v1.1') {
    throw new WebDatasetError(`DALI index line 1: unsupported version ${JSON.stringify(version)}`);
  }
  const count = Number(head[1]);
  if (!Number.isSafeInteger(count) || count <= 0) throw new WebDatasetError(`DALI index line 1: bad sample count ${JSON.stringify(head[1])}`);
  const width = version === 'v1.2' ? 4 : 3;
  const out: DaliComponent[][] = [];
  for (let i = 0; i < count; i++) {
    const lineNo = i + 2;
    const line = lines[i + 1];
    if (line === undefined) throw new WebDatasetError(`DALI index line ${lineNo}: missing; header announced ${count} samples`);
    const tokens = line
      .trim()
      .split(/\s+/)
      .filter((t) => t.length > 0);
    if (tokens.length === 0) throw new WebDatasetError(`DALI index line ${lineNo}: no components (DALI rejects an empty sample)`);
    if (tokens.length % width !== 0) {
      throw new WebDatasetError(`DALI index line ${lineNo}: expected groups of ${width} fields, got ${tokens.length}`);
    }
    const sample: DaliComponent[] = [];
    for (let j = 0; j < tokens.length; j += width) {
      const offset = Number(tokens[j + 1]);
      const size = Number(tokens[j + 2]);
      if (!Number.isSafeInteger(offset) || offset < 0 || offset % BLOCK !== 0) {
        throw new WebDatasetError(`DALI index line ${lineNo}: offset ${tokens[j + 1]} is not a multiple of ${BLOCK}`);
      }
      if (!Number.isSafeInteger(size) || size < 0) throw new WebDatasetError(`DALI index line ${lineNo}: bad size ${tokens[j + 2]}`);
      sample.push({ ext: tokens[j]!, offset, size, name: width === 4 ? tokens[j + 3]! : '' });
    }
    out.push(sample);
  }
  if (lines.slice(count + 1).some((l) => l.trim().length > 0)) {
    throw new WebDatasetError(`DALI index: more sample lines than the ${count} announced`);
  }
  return out;
}
