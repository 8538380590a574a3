// The shard job's sources, by name: each source file exports its registration (name, help line,
// how to open it); this list is the only place that names them all.
import { readFile } from 'node:fs/promises';
import { cifar100Source, cifar10Source } from './cifar.ts';
import { idxSource } from './idx.ts';
import { imageFolderSource } from './imagefolder.ts';
import { imageNetSource } from './imagenet.ts';
import { imageNet21kSource } from './imagenet21k.ts';
import { syntheticSource } from './synthetic.ts';
import { SourceError, type Source, type SourceDefinition, type SourceSpec } from './types.ts';
import { webDatasetSource } from './webdataset-source.ts';

export const SOURCES: readonly SourceDefinition[] = [
  imageFolderSource,
  imageNet21kSource,
  imageNetSource,
  cifar10Source,
  cifar100Source,
  idxSource,
  webDatasetSource,
  syntheticSource,
];

export const SOURCE_KINDS: readonly string[] = SOURCES.map((s) => s.kind);

export interface OpenSourceOptions extends Omit<SourceSpec, 'classes'> {
  /** A file with the class list (text lines or an index.json's `classes`). */
  classesFile?: string;
}

/** The "Sources:" section of the shard command's --help, from the registrations. */
export function sourcesHelp(indent = 2, column = 31): string {
  return SOURCES.map((s) => {
    const head = `${' '.repeat(indent)}${s.kind}${s.args ? ` ${s.args}` : ''}`;
    const [first, ...more] = s.help.split('\n');
    return [`${head.padEnd(column - 1)} ${first}`, ...more.map((l) => `${' '.repeat(column)}${l}`)].join('\n');
  }).join('\n');
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
  return text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter(Boolean);
}

export async function openSource(o: OpenSourceOptions): Promise<Source> {
  const def = SOURCES.find((s) => s.kind === o.kind);
  if (!def) throw new SourceError(`unknown source kind "${o.kind}"; expected one of: ${SOURCE_KINDS.join(', ')}`);
  const { classesFile, ...spec } = o;
  const classes = classesFile ? await readClassList(classesFile) : undefined;
  return def.open({ ...spec, ...(classes ? { classes } : {}) });
}
