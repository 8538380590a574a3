/**
 * Finding and running a Python interpreter for compatibility tests. The reference behaviour
 * (tarfile, numpy) lives in Python; tests skip with a reason when no suitable one exists.
 */
import { execFileSync } from 'node:child_process';

const CANDIDATES = ['python3', '/usr/bin/python3'];
const cache = new Map<string, string | null>();

/** The first of `python3`, `/usr/bin/python3` that can import every module; null if none. */
export function findPython(modules: string[]): string | null {
  const key = [...modules].sort().join(',');
  const hit = cache.get(key);
  if (hit !== undefined) return hit;
  let found: string | null = null;
  const probe = modules.length > 0 ? `import ${modules.join(', ')}` : 'pass';
  for (const py of CANDIDATES) {
    try {
      execFileSync(py, ['-c', probe], { stdio: 'ignore', timeout: 30_000 });
      found = py;
      break;
    } catch {
      // Not installed, or lacks a module: try the next one.
    }
  }
  cache.set(key, found);
  return found;
}

/** Runs `script` with `args` (stdin = input) and returns stdout; throws with stderr on failure. */
export function runPython(py: string, script: string, args: string[] = [], input?: Buffer): Buffer {
  try {
    return execFileSync(py, ['-c', script, ...args], {
      input: input ?? Buffer.alloc(0),
      maxBuffer: 1 << 30,
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: 120_000,
    });
  } catch (e) {
    const err = e as Error & { stderr?: Buffer; status?: number | null };
    const stderr = err.stderr?.toString('utf8').trim() ?? '';
    throw new Error(`python failed (exit ${err.status ?? '?'}): ${stderr || err.message}`, { cause: e });
  }
}
