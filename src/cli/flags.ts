// Reading flag values: one parser per kind of value, each throwing UsageError naming the flag.
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { UsageError } from './command.ts';

export type OptionSpec = Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;
/** Flag values as parseArgs returns them, keyed by flag name without dashes. */
export type Raw = Partial<Record<string, string | boolean | string[]>>;

/** parseArgs in strict mode; its complaints become UsageErrors. */
export function parseFlags(argv: readonly string[], spec: OptionSpec, allowPositionals = false): { raw: Raw; positionals: string[] } {
  try {
    const r = parseArgs({ args: [...argv], options: spec, strict: true, allowPositionals });
    return { raw: r.values as Raw, positionals: r.positionals };
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export const positiveInt = (v: number): string | null => (Number.isInteger(v) && v >= 1 ? null : 'must be a positive integer');
export const nonNegInt = (v: number): string | null => (Number.isInteger(v) && v >= 0 ? null : 'must be a non-negative integer');
export const nonNeg = (v: number): string | null => (v >= 0 ? null : 'must be >= 0');
/**
 * Worker threads: each holds a decoder, buffers and a share of the task window, so a count far
 * above the cores only costs memory (1,000 threads took 7-9 GB and made no progress).
 */
export const MAX_WORKERS = Math.max(8, 4 * availableParallelism());
export const workerCount = (v: number): string | null => positiveInt(v) ?? (v <= MAX_WORKERS ? null : `must be at most ${MAX_WORKERS} (4 x this machine's cores)`);
export const unit = (v: number): string | null => (v >= 0 && v < 1 ? null : 'must be in [0, 1)');

/** Flag `key` as a number that `check` accepts, else `fallback`. */
export function num(raw: Raw, key: string, fallback: number, check: (v: number) => string | null): number {
  const s = raw[key];
  if (s === undefined) return fallback;
  const v = Number(s);
  if (typeof s !== 'string' || s.trim() === '' || !Number.isFinite(v)) throw new UsageError(`not a number: ${String(s)}`, key);
  const bad = check(v);
  if (bad) throw new UsageError(`${bad}, got ${s}`, key);
  return v;
}

/** Flag `key` as a number when given, else undefined. */
export function optionalNum(raw: Raw, key: string, check: (v: number) => string | null): number | undefined {
  return raw[key] === undefined ? undefined : num(raw, key, 0, check);
}

export function oneOf<T extends string>(raw: Raw, key: string, choices: readonly T[], fallback: T): T {
  const s = raw[key];
  if (s === undefined) return fallback;
  if (typeof s !== 'string' || !(choices as readonly string[]).includes(s)) {
    throw new UsageError(`expected one of ${choices.join(', ')}, got ${String(s)}`, key);
  }
  return s as T;
}

export function str(raw: Raw, key: string): string | undefined {
  const s = raw[key];
  return typeof s === 'string' ? s : undefined;
}

/** Flag `key` as "LO,HI" (two finite numbers that `check` accepts), else `fallback`. */
export function pair(raw: Raw, key: string, fallback: readonly [number, number], check: (lo: number, hi: number) => string | null): [number, number] {
  const s = str(raw, key);
  if (s === undefined) return [fallback[0], fallback[1]];
  const parts = s.split(',').map((x) => x.trim());
  const v = parts.map(Number);
  if (parts.length !== 2 || parts.some((p) => p === '') || !v.every(Number.isFinite)) throw new UsageError(`expected two numbers LO,HI, got ${s}`, key);
  const bad = check(v[0]!, v[1]!);
  if (bad) throw new UsageError(`${bad}, got ${s}`, key);
  return [v[0]!, v[1]!];
}
