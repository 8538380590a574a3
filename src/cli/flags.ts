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
export const workerCount = (v: number): string | null =>
  positiveInt(v) ?? (v <= MAX_WORKERS ? null : `must be at most ${MAX_WORKERS} (4 x this machine's cores)`);
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

/** A comma-separated list of finite numbers ("123.7,116.3,103.5"). */
export function numberList(raw: Raw, key: string): number[] | undefined {
  const s = str(raw, key);
  if (s === undefined) return undefined;
  const parts = s.split(',').map((x) => x.trim());
  const v = parts.map(Number);
  if (parts.some((p) => p === '') || !v.every(Number.isFinite)) throw new UsageError(`expected numbers separated by commas, got ${s}`, key);
  return v;
}

/** What --normalize / --mean / --std ask for: a named policy, explicit values, or nothing. */
export type NormalizeRequest = { kind: 'dataset' } | { kind: 'imagenet' } | { kind: 'explicit'; mean: number[]; std: number[] };

export const NORMALIZE_SPEC: OptionSpec = { normalize: { type: 'string' }, mean: { type: 'string' }, std: { type: 'string' } };

export function normalizeRequest(raw: Raw, allowed: readonly ('dataset' | 'imagenet')[] = ['dataset', 'imagenet']): NormalizeRequest | undefined {
  const mean = numberList(raw, 'mean');
  const std = numberList(raw, 'std');
  if ((mean === undefined) !== (std === undefined)) throw new UsageError('--mean and --std go together (per channel, 0-255 units)');
  if (mean && std) {
    if (raw['normalize'] !== undefined) throw new UsageError('give --normalize or --mean/--std, not both');
    if (mean.length !== std.length) throw new UsageError(`--mean has ${mean.length} values, --std ${std.length}`);
    if (std.some((x) => x <= 0)) throw new UsageError('must be positive', 'std');
    return { kind: 'explicit', mean, std };
  }
  if (raw['normalize'] === undefined) return undefined;
  return { kind: oneOf(raw, 'normalize', allowed, allowed[0]!) };
}
