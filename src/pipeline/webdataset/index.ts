/**
 * WebDataset in TypeScript: reads what Python's webdataset writes and writes what it reads.
 * Self-contained: only node builtins and the files in this folder.
 */
export * from './errors.ts';
export * from './tar-header.ts';
export * from './tar-writer.ts';
export * from './tar-reader.ts';
export * from './samples.ts';
export * from './codecs.ts';
export * from './urls.ts';
export * from './open-url.ts';
export * from './tar-index.ts';
export * from './wids-index.ts';
export * from './dali-index.ts';
