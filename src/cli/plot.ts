// npm run plot -- <run-dir>... : training curves from runs' metrics.jsonl as SVG or PNG.
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { renderChart, type PanelSpec } from '../plot/chart.ts';
import { formatFor, writeChart } from '../plot/output.ts';
import { PlotError, readRun, uniqueNames } from '../plot/read-metrics.ts';
import { defaultIo, runCommand, UsageError } from './command.ts';
import {
  X_LABELS,
  X_MODES,
  defaultMetrics,
  describeAvailable,
  describeMetric,
  metricFields,
  resolveMetric,
  seriesFor,
  timeline,
  type MetricRef,
  type XMode,
} from '../plot/series.ts';

const HELP = `Usage: npm run plot -- <run-dir>... [options]

Draws training curves from one or more runs' metrics.jsonl (the trainer's --out folders; a
.jsonl file can be given directly): one panel per metric stacked vertically on a shared x
axis, one colour per run, a legend with the run (folder) names.

Options:
  --out <file.svg|file.png>   output file (default: <first-run-dir>/plot.svg); the format
                              follows the extension; written under a temporary name, then renamed
  --metrics <a,b,...>         panels, top to bottom (default: loss,val_top1,images_per_sec;
                              train_top1 when no run has validation); "all" for every metric.
                              Per-update fields: loss, lr, images_per_sec, stall_pct, wait_ms,
                              compute_ms, grad_norm. Per-epoch fields: train_loss, train_top1,
                              train_top5, val_loss, val_top1, val_top5, images_per_sec,
                              stall_pct, seconds, eval_seconds. images_per_sec and stall_pct
                              are per update, or per epoch with --x epoch; step.<field> or
                              epoch.<field> picks the kind explicitly
  --x step|epoch|samples      x axis: optimizer updates (global_step, default), epochs
                              (per-update values at fractional epochs, epoch values at each
                              epoch's end), or training images seen
  --title <text>              a title above the legend
  --width <px>                image width (default 960)
  --height <px>               image height (default: 200-pixel panels plus labels)
  --scale <n>                 PNG only: pixels per SVG pixel, e.g. 2 for a sharp hi-dpi image
                              (default 1: the PNG is width x height)
  -h, --help                  this text

A resumed run is plotted along the timeline its final model followed (records logged after
the checkpoint it resumed from are dropped). A record without a metric leaves a gap in the
line. Malformed lines are skipped with a warning naming the file and line.

Exit status: 0 written, 1 unreadable or unusable metrics, 2 usage error (unknown option or
metric, bad value).`;

function positiveInt(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const x = Number(v);
  if (!Number.isInteger(x) || x <= 0) throw new UsageError(`--${name} must be a positive whole number of pixels, got "${v}"`);
  return x;
}

function warn(message: string): void {
  process.stderr.write(`plot: warning: ${message}\n`);
}

async function main(argv: string[]): Promise<number> {
  const { values: v, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: 'string', short: 'o' },
      metrics: { type: 'string', short: 'm' },
      x: { type: 'string' },
      title: { type: 'string' },
      width: { type: 'string' },
      height: { type: 'string' },
      scale: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (v.help) {
    process.stdout.write(`${HELP}\n`);
    return 0;
  }
  if (positionals.length === 0) throw new UsageError('give at least one run folder (a training --out folder holding metrics.jsonl)');
  const x = (v.x ?? 'step') as XMode;
  if (!X_MODES.includes(x)) throw new UsageError(`--x must be one of ${X_MODES.join(', ')}, got "${v.x}"`);
  const first = positionals[0]!;
  const out = v.out ?? (/\.jsonl$/i.test(first) ? join(dirname(first), 'plot.svg') : join(first, 'plot.svg'));
  const format = formatFor(out);
  if (!format) throw new UsageError(`--out must end in .svg or .png, got "${out}"`);
  const width = positiveInt('width', v.width);
  const height = positiveInt('height', v.height);
  let scale = 1;
  if (v.scale !== undefined) {
    scale = Number(v.scale);
    if (!Number.isFinite(scale) || scale <= 0 || scale > 8) throw new UsageError(`--scale must be a number in (0, 8], got "${v.scale}"`);
    if (format !== 'png') warn('--scale only applies to PNG output; ignored');
  }

  const runs = positionals.map((p) => readRun(p, warn));
  const names = uniqueNames(runs);
  const fields = metricFields(runs);

  let wanted: string[];
  if (v.metrics === undefined) {
    wanted = defaultMetrics(fields);
    if (wanted.length === 0) throw new PlotError(`no loss, accuracy or throughput in these runs; choose with --metrics from: ${describeAvailable(fields)}`);
  } else if (v.metrics.trim() === 'all') {
    wanted = [...fields.step, ...fields.epoch.map((f) => (fields.step.includes(f) ? `epoch.${f}` : f))];
  } else {
    wanted = [
      ...new Set(
        v.metrics
          .split(',')
          .map((s) => s.trim())
          .filter((s) => s !== ''),
      ),
    ];
    if (wanted.length === 0) throw new UsageError('--metrics is empty');
  }
  const refs: MetricRef[] = [];
  const unknown: string[] = [];
  for (const name of wanted) {
    const ref = resolveMetric(name, fields, x);
    if (ref) refs.push(ref);
    else unknown.push(name);
  }
  if (unknown.length) {
    throw new UsageError(
      `unknown metric${unknown.length > 1 ? 's' : ''} ${unknown.map((u) => `"${u}"`).join(', ')}; available in ${runs.length > 1 ? 'these runs' : 'this run'}: ${describeAvailable(fields)}`,
    );
  }

  const timelines = runs.map((r) => timeline(r));
  let drawn = 0;
  const panels: PanelSpec[] = refs.map((ref) => {
    const series = timelines.map((tl, i) => {
      const { points, unplaced } = seriesFor(tl, ref, x);
      if (unplaced > 0)
        warn(`${runs[i]!.file}: ${unplaced} ${ref.source} record${unplaced > 1 ? 's' : ''} without what --x ${x} needs; ${ref.name} left out there`);
      const defined = points.filter((p) => p.y !== null).length;
      if (defined === 0 && runs.length > 1) warn(`${names[i]} has no ${ref.name}`);
      drawn += defined;
      return points;
    });
    return { name: ref.name, description: describeMetric(ref, fields), series };
  });
  if (drawn === 0)
    throw new PlotError(`nothing to plot: no values of ${refs.map((r) => r.name).join(', ')} in ${runs.length > 1 ? 'these runs' : runs[0]!.file}`);

  let rendered;
  try {
    rendered = renderChart({
      runs: names,
      panels,
      xLabel: X_LABELS[x],
      integerX: x !== 'epoch',
      ...(v.title !== undefined ? { title: v.title } : {}),
      ...(width !== undefined ? { width } : {}),
      ...(height !== undefined ? { height } : {}),
    });
  } catch (e) {
    if (e instanceof RangeError) throw new UsageError(e.message);
    throw e;
  }
  let result;
  try {
    result = await writeChart(out, rendered.svg, { scale });
  } catch (e) {
    throw new PlotError(`${out}: cannot write (${(e as Error).message})`);
  }
  const { width: w, height: h } = rendered.layout;
  const px = format === 'png' && scale !== 1 ? `${Math.round(w * scale)}x${Math.round(h * scale)}` : `${w}x${h}`;
  process.stderr.write(
    `plot: wrote ${out} (${result.format.toUpperCase()} ${px}, ${runs.length} run${runs.length > 1 ? 's' : ''}, ${panels.length} panel${panels.length > 1 ? 's' : ''}: ${refs.map((r) => r.name).join(', ')})\n`,
  );
  return 0;
}

process.exit(await runCommand('plot', defaultIo, () => main(process.argv.slice(2))));
