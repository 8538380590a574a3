// Small multiples: one panel per metric stacked vertically, all sharing one x axis; one colour
// per run and a legend of run names on top. Linear scales with nice ticks; a missing value
// breaks a line (a lone point between gaps is drawn as a dot). Pure text out: an SVG string.
import type { Point } from './series.ts';
import { el, escapeXml, n, text, textWidth } from './svg.ts';
import { formatTicks, niceTicks, type Ticks } from './ticks.ts';

export interface PanelSpec {
  /** Metric name, shown in bold in the panel title. */
  name: string;
  /** Shown after the name, in grey ("" for none). */
  description: string;
  /** One entry per run (same order as ChartSpec.runs); null or [] when the run lacks the metric. */
  series: readonly (readonly Point[] | null)[];
}

export interface ChartSpec {
  /** Legend names, one per run; run i gets colour i. */
  runs: readonly string[];
  panels: readonly PanelSpec[];
  xLabel: string;
  title?: string;
  /** Pixels (default 960). */
  width?: number;
  /** Pixels (default: 200-pixel plot areas plus titles, legend and labels). */
  height?: number;
  /** Whole-number x ticks only (steps, samples). */
  integerX?: boolean;
}

export interface Rect {
  x: number;
  y: number;
  w: number;
  h: number;
}

export interface PanelLayout {
  plot: Rect;
  /** null when no run has a value in this panel. */
  yTicks: Ticks | null;
}

export interface ChartLayout {
  width: number;
  height: number;
  xTicks: Ticks;
  panels: PanelLayout[];
}

export const PALETTE = ['#4e79a7', '#e15759', '#59a14f', '#f28e2b', '#b07aa1', '#76b7b2', '#edc948', '#ff9da7', '#9c755f', '#bab0ac'];
const DASHES = [undefined, '7 3', '2 2.5'];

export function runColor(i: number): string {
  return PALETTE[i % PALETTE.length]!;
}

function runDash(i: number): string | undefined {
  return DASHES[Math.floor(i / PALETTE.length) % DASHES.length];
}

export const DEFAULT_WIDTH = 960;
export const DEFAULT_PLOT_HEIGHT = 200;
export const MIN_PLOT_HEIGHT = 60;
export const MIN_WIDTH = 320;

const FONT = 'DejaVu Sans, Verdana, Helvetica, Arial, sans-serif';
const OUTER = 16;
const TITLE_H = 30;
const LEGEND_ROW_H = 20;
const LEGEND_FONT = 13;
const LEGEND_GAP = 8;
const PANEL_TITLE_H = 22;
const X_TICK_LABELS_H = 20;
const PANEL_GAP = 16;
const X_LABEL_H = 22;
const TICK_FONT = 11;
const TICK_LEN = 5;
const RIGHT = 28;
const SWATCH_W = 24;

const GRID = '#e8e8e8';
const FRAME = '#b4b4b4';
const TICK_TEXT = '#444';

/** Legend entries laid out left to right, wrapping at maxWidth. */
function legendRows(names: readonly string[], maxWidth: number): { x: number; row: number }[] {
  const out: { x: number; row: number }[] = [];
  let x = 0;
  let row = 0;
  for (const name of names) {
    const w = SWATCH_W + 6 + textWidth(name, LEGEND_FONT);
    if (x > 0 && x + w > maxWidth) {
      row++;
      x = 0;
    }
    out.push({ x, row });
    x += w + 22;
  }
  return out;
}

/** The chart's fixed vertical space (everything except the plot areas). */
function fixedHeight(panels: number, legendRows: number, title: boolean): number {
  return (
    OUTER +
    (title ? TITLE_H : 0) +
    legendRows * LEGEND_ROW_H +
    LEGEND_GAP +
    panels * (PANEL_TITLE_H + X_TICK_LABELS_H) +
    (panels - 1) * PANEL_GAP +
    X_LABEL_H +
    OUTER
  );
}

function extent(values: Iterable<number>): [number, number] | null {
  let lo = Infinity;
  let hi = -Infinity;
  for (const v of values) {
    if (!Number.isFinite(v)) continue;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return lo <= hi ? [lo, hi] : null;
}

function* allPoints(spec: ChartSpec): Generator<Point> {
  for (const p of spec.panels) for (const s of p.series) if (s) yield* s;
}

/** Splits a series at missing values into runs of consecutive defined points. */
export function segments(points: readonly Point[]): Point[][] {
  const out: Point[][] = [];
  let cur: Point[] = [];
  for (const p of points) {
    if (p.y === null || !Number.isFinite(p.y) || !Number.isFinite(p.x)) {
      if (cur.length) out.push(cur);
      cur = [];
    } else cur.push(p);
  }
  if (cur.length) out.push(cur);
  return out;
}

/**
 * Keeps at most 4 points per pixel column (first, lowest, highest, last, in order), which
 * draws the same line as all of them. Only applied when a segment has more than 4 points per
 * column on average.
 */
export function decimate(px: readonly [number, number][], columns: number): [number, number][] {
  if (px.length <= 4 * columns) return px.slice();
  const out: [number, number][] = [];
  let i = 0;
  while (i < px.length) {
    const col = Math.floor(px[i]![0]);
    let j = i;
    let lo = i;
    let hi = i;
    while (j < px.length && Math.floor(px[j]![0]) === col) {
      if (px[j]![1] < px[lo]![1]) lo = j;
      if (px[j]![1] > px[hi]![1]) hi = j;
      j++;
    }
    const keep = [...new Set([i, lo, hi, j - 1])].sort((a, b) => a - b);
    for (const k of keep) out.push(px[k]!);
    i = j;
  }
  return out;
}

export function layoutChart(spec: ChartSpec): ChartLayout & { legend: { x: number; row: number }[]; legendTop: number; plotLeft: number } {
  const width = spec.width ?? DEFAULT_WIDTH;
  if (!(width >= MIN_WIDTH)) throw new RangeError(`width must be at least ${MIN_WIDTH} pixels, got ${width}`);
  const count = spec.panels.length;
  if (count === 0) throw new RangeError('nothing to draw: no panels');

  // Plot height first (the y tick count depends on it), then the left margin from the widest
  // y tick label, then the x ticks from the plot width.
  const provisionalLegend = legendRows(spec.runs, width - 2 * OUTER - 60);
  const legendRowCount = (ls: { row: number }[]): number => (ls.length ? ls[ls.length - 1]!.row + 1 : 0);
  const fixed = fixedHeight(count, legendRowCount(provisionalLegend), spec.title !== undefined);
  let plotH = DEFAULT_PLOT_HEIGHT;
  if (spec.height !== undefined) {
    plotH = Math.floor((spec.height - fixed) / count);
    if (plotH < MIN_PLOT_HEIGHT) {
      throw new RangeError(
        `height ${spec.height} is too small for ${count} panel${count === 1 ? '' : 's'}: needs at least ${fixed + count * MIN_PLOT_HEIGHT} pixels`,
      );
    }
  }
  const yTarget = Math.max(2, Math.min(8, Math.round(plotH / 45)));
  const yTicks = spec.panels.map((p) => {
    const e = extent(
      (function* () {
        for (const s of p.series) if (s) for (const q of s) if (q.y !== null) yield q.y;
      })(),
    );
    return e ? niceTicks(e[0], e[1], { target: yTarget }) : null;
  });
  let labelW = 0;
  for (const t of yTicks) if (t) for (const l of formatTicks(t.values, t.step)) labelW = Math.max(labelW, textWidth(l, TICK_FONT));
  const plotLeft = Math.round(OUTER + Math.max(28, labelW) + TICK_LEN + 6);
  const plotW = width - plotLeft - RIGHT;

  // The legend wraps within the plot width, aligned with the plots; if it needs more rows
  // than the provisional layout, a fixed --height leaves the plots a little shorter.
  const legend = legendRows(spec.runs, plotW);
  const extraRows = legendRowCount(legend) - legendRowCount(provisionalLegend);
  if (spec.height !== undefined && extraRows > 0) plotH = Math.floor((spec.height - fixed - extraRows * LEGEND_ROW_H) / count);

  const xe = extent(
    (function* () {
      for (const p of allPoints(spec)) if (p.y !== null) yield p.x;
    })(),
  ) ?? [0, 1];
  // Start at zero when the data starts near it (the first update is 1, the first batch 64 images).
  if (xe[0] > 0 && xe[0] <= 0.2 * xe[1]) xe[0] = 0;
  const xTicks = niceTicks(xe[0], xe[1], { target: Math.max(2, Math.min(12, Math.round(plotW / 100))), integer: spec.integerX ?? false });

  const legendTop = OUTER + (spec.title !== undefined ? TITLE_H : 0);
  let y = legendTop + legendRowCount(legend) * LEGEND_ROW_H + LEGEND_GAP;
  const panels: PanelLayout[] = [];
  for (let i = 0; i < count; i++) {
    const top = y + PANEL_TITLE_H;
    panels.push({ plot: { x: plotLeft, y: top, w: plotW, h: plotH }, yTicks: yTicks[i]! });
    y = top + plotH + X_TICK_LABELS_H + PANEL_GAP;
  }
  const height = spec.height ?? y - PANEL_GAP + X_LABEL_H + OUTER;
  return { width, height, xTicks, panels, legend, legendTop, plotLeft };
}

export function renderChart(spec: ChartSpec): { svg: string; layout: ChartLayout } {
  const L = layoutChart(spec);
  const { width, height, xTicks } = L;
  const out: string[] = [];
  out.push(el('rect', { x: 0, y: 0, width, height, fill: '#ffffff' }));

  const defs = L.panels.map((p, i) =>
    el('clipPath', { id: `plot-clip-${i}` }, el('rect', { x: p.plot.x - 3, y: p.plot.y - 3, width: p.plot.w + 6, height: p.plot.h + 6 })),
  );
  out.push(el('defs', {}, defs));

  if (spec.title !== undefined) {
    out.push(text(spec.title, { class: 'title', x: L.plotLeft, y: OUTER + 19, 'font-size': 18, 'font-weight': 'bold', fill: '#222' }));
  }

  // Legend.
  const legend = spec.runs.map((name, i) => {
    const pos = L.legend[i]!;
    const x = L.plotLeft + pos.x;
    const cy = L.legendTop + pos.row * LEGEND_ROW_H + LEGEND_ROW_H / 2;
    return el('g', { class: 'legend-entry' }, [
      el('line', { x1: x, y1: cy, x2: x + SWATCH_W, y2: cy, stroke: runColor(i), 'stroke-width': 2.5, 'stroke-dasharray': runDash(i) }),
      el('circle', { cx: x + SWATCH_W / 2, cy, r: 3, fill: runColor(i) }),
      text(name, { x: x + SWATCH_W + 6, y: cy + LEGEND_FONT * 0.36, 'font-size': LEGEND_FONT, fill: '#222' }),
    ]);
  });
  out.push(el('g', { class: 'legend' }, legend));

  const xLabels = formatTicks(xTicks.values, xTicks.step);
  spec.panels.forEach((panel, pi) => {
    const { plot, yTicks } = L.panels[pi]!;
    const g: string[] = [];
    const titleParts = [el('tspan', { 'font-weight': 'bold', fill: '#222' }, escapeXml(panel.name))];
    if (panel.description) titleParts.push(el('tspan', { dx: 8, fill: '#777' }, escapeXml(panel.description)));
    g.push(el('text', { class: 'panel-title', x: plot.x, y: plot.y - 8, 'font-size': 13 }, titleParts));
    g.push(el('rect', { class: 'plot-area', x: plot.x, y: plot.y, width: plot.w, height: plot.h, fill: '#ffffff' }));

    const sx = (v: number): number => plot.x + ((v - xTicks.lo) / (xTicks.hi - xTicks.lo)) * plot.w;
    const bottom = plot.y + plot.h;
    // x grid, tick marks, labels (every panel, so each reads on its own).
    const grid: string[] = [];
    const ticks: string[] = [];
    const labels: string[] = [];
    xTicks.values.forEach((v, k) => {
      const x = sx(v);
      grid.push(el('line', { x1: x, y1: plot.y, x2: x, y2: bottom }));
      ticks.push(el('line', { x1: x, y1: bottom, x2: x, y2: bottom + TICK_LEN }));
      labels.push(text(xLabels[k]!, { x, y: bottom + TICK_LEN + TICK_FONT + 2, 'text-anchor': 'middle' }));
    });
    if (yTicks) {
      const sy = (v: number): number => bottom - ((v - yTicks.lo) / (yTicks.hi - yTicks.lo)) * plot.h;
      const yLabels = formatTicks(yTicks.values, yTicks.step);
      yTicks.values.forEach((v, k) => {
        const y = sy(v);
        grid.push(el('line', { x1: plot.x, y1: y, x2: plot.x + plot.w, y2: y }));
        ticks.push(el('line', { x1: plot.x - TICK_LEN, y1: y, x2: plot.x, y2: y }));
        labels.push(text(yLabels[k]!, { x: plot.x - TICK_LEN - 4, y: y + TICK_FONT * 0.36, 'text-anchor': 'end' }));
      });
      g.push(el('g', { class: 'grid', stroke: GRID, 'stroke-width': 1 }, grid));
      g.push(el('g', { class: 'ticks', stroke: FRAME }, ticks), el('g', { class: 'tick-labels', fill: TICK_TEXT, 'font-size': TICK_FONT }, labels));

      const lines: string[] = [];
      panel.series.forEach((points, ri) => {
        if (!points || points.length === 0) return;
        const color = runColor(ri);
        const segs = segments(points);
        const defined = segs.reduce((a, s) => a + s.length, 0);
        const markers = defined <= plot.w / 14;
        const parts: string[] = [];
        for (const seg of segs) {
          const px = decimate(
            seg.map((p) => [sx(p.x), sy(p.y!)] as [number, number]),
            plot.w,
          );
          if (px.length >= 2) {
            parts.push(el('polyline', { class: 'series', fill: 'none', points: px.map(([a, b]) => `${n(a)},${n(b)}`).join(' ') }));
          }
          if (markers || px.length === 1) {
            for (const [a, b] of px)
              parts.push(el('circle', { class: 'marker', cx: a, cy: b, r: markers ? 2.8 : 2.2, stroke: '#ffffff', 'stroke-width': 0.8 }));
          }
        }
        lines.push(
          el(
            'g',
            {
              class: 'run',
              'data-run': ri,
              fill: color,
              stroke: color,
              'stroke-width': 1.6,
              'stroke-linejoin': 'round',
              'stroke-linecap': 'round',
              'stroke-dasharray': runDash(ri),
            },
            parts,
          ),
        );
      });
      g.push(el('g', { class: 'series-group', 'clip-path': `url(#plot-clip-${pi})` }, lines));
    } else {
      g.push(el('g', { class: 'grid', stroke: GRID, 'stroke-width': 1 }, grid));
      g.push(el('g', { class: 'ticks', stroke: FRAME }, ticks), el('g', { class: 'tick-labels', fill: TICK_TEXT, 'font-size': TICK_FONT }, labels));
      g.push(text('no data', { x: plot.x + plot.w / 2, y: plot.y + plot.h / 2 + 5, 'text-anchor': 'middle', 'font-size': 14, fill: '#999' }));
    }
    g.push(el('rect', { class: 'frame', x: plot.x, y: plot.y, width: plot.w, height: plot.h, fill: 'none', stroke: FRAME, 'stroke-width': 1 }));
    out.push(el('g', { class: 'panel', 'data-metric': panel.name }, g));
  });

  const last = L.panels[L.panels.length - 1]!.plot;
  out.push(
    text(spec.xLabel, {
      class: 'x-label',
      x: last.x + last.w / 2,
      y: last.y + last.h + X_TICK_LABELS_H + 18,
      'text-anchor': 'middle',
      'font-size': 12,
      fill: '#333',
    }),
  );

  const svg =
    `<?xml version="1.0" encoding="UTF-8"?>\n` +
    el(
      'svg',
      { xmlns: 'http://www.w3.org/2000/svg', width, height, viewBox: `0 0 ${width} ${height}`, 'font-family': FONT },
      out.map((s) => `\n${s}`).concat('\n'),
    ) +
    '\n';
  return { svg, layout: L };
}
