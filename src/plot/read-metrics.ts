// Reading a run's metrics.jsonl (written by src/train/metrics.ts): one JSON object per line
// with a string "type". Malformed lines (a crash mid-write leaves a partial last line) are
// skipped with a warning naming the file and line; a file with nothing usable is an error.
import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, join, resolve, sep } from 'node:path';

/** A problem with the input data (exit status 1), as opposed to a usage error. */
export class PlotError extends Error {}

export interface MetricsRecord {
  /** 1-based line number in the file. */
  line: number;
  type: string;
  data: Record<string, unknown>;
}

export interface ParsedMetrics {
  records: MetricsRecord[];
  /** One message per malformed line: "<file>:<line>: ...". */
  warnings: string[];
}

export function parseMetricsText(text: string, file: string): ParsedMetrics {
  const records: MetricsRecord[] = [];
  const warnings: string[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!.trim();
    if (raw === '') continue;
    const where = `${file}:${i + 1}`;
    let value: unknown;
    try {
      value = JSON.parse(raw);
    } catch (e) {
      warnings.push(`${where}: malformed line skipped (invalid JSON: ${(e as Error).message})`);
      continue;
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      warnings.push(`${where}: malformed line skipped (not a JSON object)`);
      continue;
    }
    const data = value as Record<string, unknown>;
    if (typeof data['type'] !== 'string') {
      warnings.push(`${where}: malformed line skipped (no "type" field)`);
      continue;
    }
    records.push({ line: i + 1, type: data['type'], data });
  }
  return { records, warnings };
}

export interface Run {
  /** Legend name: the run folder's name (made unique by the caller). */
  name: string;
  /** The folder (or file) as given on the command line. */
  path: string;
  file: string;
  records: MetricsRecord[];
}

const MAX_WARNINGS_PER_FILE = 5;

/** Reads <dir>/metrics.jsonl (or a .jsonl file given directly). */
export function readRun(path: string, warn: (message: string) => void): Run {
  if (!existsSync(path)) throw new PlotError(`${path}: no such folder`);
  const isDir = statSync(path).isDirectory();
  const file = isDir ? join(path, 'metrics.jsonl') : path;
  if (isDir && !existsSync(file)) throw new PlotError(`${path}: no metrics.jsonl in this folder (expected a training run's --out folder)`);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new PlotError(`${file}: cannot read (${(e as Error).message})`);
  }
  if (text.trim() === '') throw new PlotError(`${file}: empty file (the run has logged nothing yet)`);
  const { records, warnings } = parseMetricsText(text, file);
  for (const w of warnings.slice(0, MAX_WARNINGS_PER_FILE)) warn(w);
  if (warnings.length > MAX_WARNINGS_PER_FILE) warn(`${file}: ... and ${warnings.length - MAX_WARNINGS_PER_FILE} more malformed lines skipped`);
  if (records.length === 0)
    throw new PlotError(`${file}: no valid records left (${warnings.length} malformed line${warnings.length === 1 ? '' : 's'} skipped)`);
  if (!records.some((r) => r.type === 'step' || r.type === 'epoch')) {
    throw new PlotError(`${file}: no "step" or "epoch" records (found only: ${[...new Set(records.map((r) => r.type))].join(', ')})`);
  }
  const name = basename(resolve(isDir ? path : resolve(path, '..')));
  return { name, path, file, records };
}

/**
 * Legend names: each run's folder name; runs whose folder names collide get their path as
 * given instead (and a #n suffix if even those collide).
 */
export function uniqueNames(runs: readonly Pick<Run, 'name' | 'path'>[]): string[] {
  const count = new Map<string, number>();
  for (const r of runs) count.set(r.name, (count.get(r.name) ?? 0) + 1);
  const names = runs.map((r) =>
    count.get(r.name)! > 1
      ? r.path
          .replace(/[/\\]+$/, '')
          .split(sep)
          .join('/') || r.name
      : r.name,
  );
  const seen = new Map<string, number>();
  return names.map((n) => {
    const k = (seen.get(n) ?? 0) + 1;
    seen.set(n, k);
    return k === 1 ? n : `${n} #${k}`;
  });
}
