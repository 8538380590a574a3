// Linear axes: "nice" tick steps (1, 2 or 5 times a power of ten), a domain widened to whole
// steps, and tick labels that all use the same notation.

export interface Ticks {
  /** The domain, widened to multiples of step. */
  lo: number;
  hi: number;
  step: number;
  values: number[];
}

/** The nice step (1, 2 or 5 x 10^k) nearest to span / target, as in Heckbert's "nice numbers". */
export function niceStep(span: number, target: number): number {
  if (!(span > 0) || !Number.isFinite(span)) throw new RangeError(`niceStep: span must be a positive number, got ${span}`);
  const raw = span / Math.max(1, target);
  const pow = 10 ** Math.floor(Math.log10(raw) + 1e-12);
  // Rounded so that 0.3 / 0.1 (2.9999999999999996) counts as 3.
  const f = Number((raw / pow).toPrecision(12));
  const nice = f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10;
  return nice * pow;
}

/** Decimal places needed to write multiples of step exactly (step = 1, 2 or 5 x 10^k). */
export function stepDecimals(step: number): number {
  return Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
}

/** Rounds away binary noise (0.30000000000000004 -> 0.3) at the precision of the step. */
function clean(v: number, step: number): number {
  const r = Number(v.toFixed(Math.min(20, stepDecimals(step) + 2)));
  return Object.is(r, -0) ? 0 : r;
}

export interface TickOptions {
  /** Roughly how many intervals to aim for (default 5). */
  target?: number;
  /** Never a step below 1 (steps, epochs). */
  integer?: boolean;
}

/**
 * Ticks for the data range [min, max]. A single value v gets the domain [min(0, v), max(0, v)]
 * (so a constant line sits on a scale from zero); [0, 0] becomes [0, 1].
 */
export function niceTicks(min: number, max: number, opts: TickOptions = {}): Ticks {
  if (!Number.isFinite(min) || !Number.isFinite(max)) throw new RangeError(`niceTicks: non-finite range [${min}, ${max}]`);
  if (min > max) [min, max] = [max, min];
  if (min === max) {
    if (min === 0) max = 1;
    else [min, max] = [Math.min(0, min), Math.max(0, max)];
  }
  let step = niceStep(max - min, opts.target ?? 5);
  if (opts.integer && step < 1) step = 1;
  const k0 = Math.floor(min / step + 1e-9);
  const k1 = Math.ceil(max / step - 1e-9);
  const values: number[] = [];
  for (let k = k0; k <= k1; k++) values.push(clean(k * step, step));
  return { lo: values[0]!, hi: values[values.length - 1]!, step, values };
}

const SUFFIXES: [number, string][] = [
  [1e12, 'T'],
  [1e9, 'G'],
  [1e6, 'M'],
  [1e3, 'k'],
];

/**
 * Labels for one axis, all in one notation: plain decimals with as many places as the step
 * needs; k/M/G suffixes once the ticks reach 10,000; and exponents (5e-5, 1.0e-4, 1.5e-4) when
 * every tick is below 0.001 (learning rates).
 */
export function formatTicks(values: readonly number[], step: number): string[] {
  const maxAbs = Math.max(...values.map(Math.abs));
  if (maxAbs === 0) return values.map(() => '0');
  if (maxAbs >= 1e4) {
    const [div, suffix] = SUFFIXES.find(([d]) => maxAbs >= d)!;
    const places = stepDecimals(step / div);
    return values.map((v) => (v === 0 ? '0' : `${(v / div).toFixed(places)}${suffix}`));
  }
  if (maxAbs < 1e-3) {
    const stepExp = Math.floor(Math.log10(step) + 1e-9);
    return values.map((v) => {
      if (v === 0) return '0';
      const exp = Math.floor(Math.log10(Math.abs(v)) + 1e-9);
      return v.toExponential(Math.max(0, exp - stepExp));
    });
  }
  const places = stepDecimals(step);
  return values.map((v) => {
    const s = v.toFixed(places);
    return /^-0(\.0*)?$/.test(s) ? s.slice(1) : s;
  });
}
