// One progress line on a terminal (rewritten in place), or a plain line every few seconds when
// output goes to a file or CI log.
export class ProgressLine {
  private readonly started = performance.now();
  private last = 0;
  private readonly tty: boolean;

  constructor(
    private readonly stream: NodeJS.WriteStream = process.stderr,
    private readonly quiet = false,
  ) {
    this.tty = Boolean(stream.isTTY);
  }

  update(label: string, done: number, total: number | null, extra = '', force = false): void {
    if (this.quiet) return;
    const now = performance.now();
    if (!force && now - this.last < (this.tty ? 200 : 10000)) return;
    this.last = now;
    const seconds = (now - this.started) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const pct = total ? ` (${((100 * done) / total).toFixed(1)}%)` : '';
    const eta = total && rate > 0 ? ` ETA ${formatDuration((total - done) / rate)}` : '';
    const line = `${label}: ${done.toLocaleString('en-US')}${total !== null ? `/${total.toLocaleString('en-US')}` : ''}${pct} ${Math.round(rate).toLocaleString('en-US')} img/s${eta}${extra}`;
    this.stream.write(this.tty ? `\r\x1b[K${line}` : `${line}\n`);
  }

  done(): void {
    if (this.tty && !this.quiet && this.last > 0) this.stream.write('\n');
  }
}

export function formatDuration(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const sec = Math.floor(s % 60);
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${String(sec).padStart(2, '0')}` : `${m}:${String(sec).padStart(2, '0')}`;
}
