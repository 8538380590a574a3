/**
 * Shard URL patterns: Python braceexpand 0.1.7 semantics and webdataset's "::" lists.
 */
import { UrlError } from './errors.ts';

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
const INT_RANGE_RE = /^(-?\d+)\.\.(-?\d+)(?:\.\.-?(\d+))?$/;
const CHAR_RANGE_RE = /^([A-Za-z])\.\.([A-Za-z])(?:\.\.-?(\d+))?$/;
// Refuse patterns that would expand to more strings than any shard list plausibly has.
const MAX_EXPANSION = 10_000_000;

function unbalanced(pattern: string): UrlError {
  return new UrlError(`unbalanced braces in URL pattern ${JSON.stringify(pattern)}`);
}

/** Cartesian product of the parts, first part varying slowest (itertools.product). */
function product(parts: string[][], pattern: string): string[] {
  let out = [''];
  for (const part of parts) {
    if (out.length * part.length > MAX_EXPANSION) {
      throw new UrlError(`URL pattern ${JSON.stringify(pattern)} expands to more than ${MAX_EXPANSION} strings`);
    }
    const next: string[] = [];
    for (const prefix of out) for (const s of part) next.push(prefix + s);
    out = next;
  }
  return out;
}

function parsePattern(pattern: string): string[] {
  const items: string[][] = [];
  let start = 0;
  let pos = 0;
  let depth = 0;
  while (pos < pattern.length) {
    const c = pattern[pos];
    if (c === '\\') {
      pos += 2; // the escaped character is never special
      continue;
    }
    if (c === '{') {
      if (depth === 0 && pos > start) {
        items.push([pattern.slice(start, pos)]);
        start = pos;
      }
      depth++;
    } else if (c === '}') {
      depth--;
      if (depth === 0) {
        const expr = pattern.slice(start + 1, pos);
        const item = parseExpression(expr);
        // Not a range or a list: the braces stay, their contents are still expanded.
        if (item === null) items.push(['{'], parsePattern(expr), ['}']);
        else items.push(item);
        start = pos + 1;
      }
    }
    pos++;
  }
  if (depth !== 0) throw unbalanced(pattern);
  if (start < pos) items.push([pattern.slice(start)]);
  return product(items, pattern);
}

function parseExpression(expr: string): string[] | null {
  const im = INT_RANGE_RE.exec(expr);
  if (im !== null) return intRange(im[1]!, im[2]!, im[3]);
  const cm = CHAR_RANGE_RE.exec(expr);
  if (cm !== null) return charRange(cm[1]!, cm[2]!, cm[3]);
  return parseSequence(expr);
}

function parseSequence(seq: string): string[] | null {
  const items: string[][] = [];
  let start = 0;
  let pos = 0;
  let depth = 0;
  while (pos < seq.length) {
    const c = seq[pos];
    if (c === '\\') {
      pos += 2;
      continue;
    }
    if (c === '{') depth++;
    else if (c === '}') depth--;
    else if (c === ',' && depth === 0) {
      items.push(parsePattern(seq.slice(start, pos)));
      start = pos + 1;
    }
    pos++;
  }
  if (depth !== 0) throw unbalanced(seq);
  if (items.length === 0) return null;
  items.push(parsePattern(seq.slice(start)));
  return items.flat();
}

function toInt(s: string): number {
  const n = Number(s);
  if (!Number.isSafeInteger(n)) throw new UrlError(`range bound ${s} is too large`);
  return n;
}

function stepsOf(start: number, end: number, step: number): number[] {
  const count = Math.floor(Math.abs(end - start) / step) + 1;
  if (count > MAX_EXPANSION) throw new UrlError(`range {${start}..${end}} has more than ${MAX_EXPANSION} values`);
  const dir = start < end ? 1 : -1;
  const out: number[] = [];
  for (let i = 0; i < count; i++) out.push(start + dir * i * step);
  return out;
}

function intRange(left: string, right: string, incr: string | undefined): string[] {
  // Zero-pad to the longer bound when either bound (other than a bare 0) has a leading zero.
  const padded = [left, right].some((s) => s !== '0' && s !== '-0' && (s.startsWith('0') || s.startsWith('-0')));
  const width = padded ? Math.max(left.length, right.length) : 0;
  const step = incr !== undefined && toInt(incr) !== 0 ? toInt(incr) : 1;
  return stepsOf(toInt(left), toInt(right), step).map((i) => {
    // Python's '%0Nd': the width counts the sign.
    const digits = String(Math.abs(i));
    const sign = i < 0 ? '-' : '';
    return sign + digits.padStart(Math.max(0, width - sign.length), '0');
  });
}

function charRange(left: string, right: string, incr: string | undefined): string[] {
  const step = incr !== undefined && toInt(incr) !== 0 ? toInt(incr) : 1;
  return stepsOf(ALPHABET.indexOf(left), ALPHABET.indexOf(right), step).map((i) => ALPHABET[i]!);
}

/**
 * Bash-style brace expansion as Python's braceexpand does it: lists, nested braces, integer
 * and letter ranges with steps in either direction, zero padding, backslash escapes. Braces
 * that hold no list or range stay literal ("{a}"); unbalanced braces are an error, as in
 * braceexpand (UrlError).
 */
export function braceExpand(pattern: string): string[] {
  return parsePattern(pattern).map((s) => s.replace(/\\(.)/g, '$1'));
}

/** webdataset's URL spec: every string split on "::", every part brace-expanded, in order. */
export function expandUrls(spec: string | readonly string[]): string[] {
  const specs = typeof spec === 'string' ? [spec] : spec;
  const out: string[] = [];
  for (const s of specs) for (const part of s.split('::')) out.push(...braceExpand(part));
  return out;
}
