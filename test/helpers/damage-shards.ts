// Damages a sharded dataset in controlled ways, for the integrity tests: a shard's DALI .idx
// rewritten (offsets shifted, a size wrong), or every member's data overwritten while the tar
// headers stay intact (the shard still matches its index; only the payloads are bad).
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { type DaliComponent, encodeDaliIndex, parseDaliIndex } from '../../src/pipeline/webdataset/dali-index.ts';

export function readIdx(idxPath: string): DaliComponent[][] {
  return parseDaliIndex(readFileSync(idxPath, 'utf8'));
}

/** Rewrites `idxPath` with `edit` applied to its parsed samples (edited in place). */
export function editIdx(idxPath: string, edit: (samples: DaliComponent[][]) => void): void {
  const samples = readIdx(idxPath);
  edit(samples);
  writeFileSync(
    idxPath,
    encodeDaliIndex(
      samples.map((s) => ({ members: s.map((c) => ({ ext: c.ext, name: c.name, headerOffset: c.offset - 512, dataOffset: c.offset, size: c.size })) })),
    ),
  );
}

/** The component of `sample` with extension `ext` (throws if there is none). */
export function member(sample: DaliComponent[], ext: string): DaliComponent {
  const c = sample.find((m) => m.ext === ext);
  if (!c) throw new Error(`no .${ext} member in ${JSON.stringify(sample)}`);
  return c;
}

/** Overwrites the data of every member listed in the shard's .idx with `byte`; headers are kept. */
export function overwriteMemberData(tarPath: string, idxPath: string, byte: number): void {
  const fd = openSync(tarPath, 'r+');
  try {
    for (const s of readIdx(idxPath)) for (const c of s) writeSync(fd, Buffer.alloc(c.size, byte), 0, c.size, c.offset);
  } finally {
    closeSync(fd);
  }
}
