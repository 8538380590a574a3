import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** Code-point order, as Python's sorted() on str (torchvision sorts class folders this way). */
export function byCodePoint(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Regular files below `dir` (following symlinks, as torchvision's os.walk(followlinks=True)),
 * relative to `dir`, in sorted order; hidden files and folders are left out.
 */
export async function listFilesRecursive(dir: string): Promise<string[]> {
  const out: string[] = [];
  async function walk(rel: string): Promise<void> {
    const entries = await readdir(join(dir, rel), { withFileTypes: true });
    entries.sort((a, b) => byCodePoint(a.name, b.name));
    for (const e of entries) {
      if (e.name.startsWith('.')) continue;
      const child = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(child);
      else if (e.isFile()) out.push(child);
      else if (e.isSymbolicLink()) {
        const { stat } = await import('node:fs/promises');
        const s = await stat(join(dir, child)).catch(() => null);
        if (s?.isDirectory()) await walk(child);
        else if (s?.isFile()) out.push(child);
      }
    }
  }
  await walk('');
  return out;
}

/** Immediate subfolders of `dir`, sorted, hidden ones left out. */
export async function listSubdirs(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true });
  return entries
    .filter((e) => !e.name.startsWith('.') && e.isDirectory())
    .map((e) => e.name)
    .sort(byCodePoint);
}
