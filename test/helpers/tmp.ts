import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** A fresh temp folder (in `base`, default the OS temp folder) removed when the test ends. */
export function tempDir(t: { teardown(fn: () => void): void }, prefix = 'smlp-', base = tmpdir()): string {
  const dir = mkdtempSync(join(base, prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}
