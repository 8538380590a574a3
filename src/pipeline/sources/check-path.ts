import { stat } from 'node:fs/promises';
import { SourceError } from './types.ts';

export async function requireDir(path: string, what: string): Promise<void> {
  const s = await stat(path).catch(() => null);
  if (!s) throw new SourceError(`${what} does not exist`, path);
  if (!s.isDirectory()) throw new SourceError(`${what} must be a folder`, path);
}

export async function requireFile(path: string, what: string): Promise<void> {
  const s = await stat(path).catch(() => null);
  if (!s) throw new SourceError(`${what} does not exist`, path);
  if (!s.isFile()) throw new SourceError(`${what} must be a file`, path);
}
