import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { tempDir } from '../helpers/tmp.ts';

const root = new URL('../../', import.meta.url).pathname;

function plot(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'src/cli/plot.ts'), ...args], { encoding: 'utf8', cwd: root });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** A small run: 2 epochs of 5 updates, validation only when asked. */
function makeRun(dir: string, opts: { val?: boolean; extra?: string[] } = {}): string {
  mkdirSync(dir, { recursive: true });
  const lines: string[] = [];
  let g = 0;
  for (let e = 0; e < 2; e++) {
    for (let s = 0; s < 5; s++) {
      g++;
      lines.push(
        JSON.stringify({
          type: 'step',
          epoch: e,
          step: s,
          global_step: g,
          samples: 64,
          loss: 2.3 / g,
          lr: 1e-3,
          images_per_sec: 1000 + 10 * g,
          stall_pct: 1,
          wait_ms: 1,
          compute_ms: 10,
        }),
      );
    }
    lines.push(
      JSON.stringify({
        type: 'epoch',
        epoch: e,
        global_step: g,
        train_loss: 1 / (e + 1),
        train_top1: 40 + 10 * e,
        train_top5: 90,
        ...(opts.val ? { val_loss: 1.1 / (e + 1), val_top1: 35 + 10 * e, val_top5: 88 } : {}),
        images_per_sec: 1050,
        stall_pct: 1,
        seconds: 1,
      }),
    );
  }
  lines.push(...(opts.extra ?? []));
  writeFileSync(join(dir, 'metrics.jsonl'), `${lines.join('\n')}\n`);
  return dir;
}

t.test('--help', async (t) => {
  const r = plot(['--help']);
  t.equal(r.code, 0);
  for (const word of ['--out', '--metrics', '--x step|epoch|samples', '--title', '--width', '--height', '--scale', 'metrics.jsonl', 'Exit status'])
    t.match(r.stdout, word);
});

t.test('one run: default output <dir>/plot.svg, atomic (no temp files left)', async (t) => {
  const run = makeRun(join(tempDir(t, 'plot-cli-'), 'run-a'), { val: true });
  const r = plot([run]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /plot: wrote .*run-a\/plot\.svg \(SVG 960x\d+, 1 run, 3 panels: loss, val_top1, images_per_sec\)/);
  const svg = readFileSync(join(run, 'plot.svg'), 'utf8');
  t.match(svg, /^<\?xml version="1\.0" encoding="UTF-8"\?>\n<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  t.equal(svg.match(/<g class="panel"/g)!.length, 3);
  t.match(svg, />run-a</);
  // Panel 1 (loss, 10 updates) and 3 (images_per_sec) have one 10-point line; panel 2
  // (val_top1, 2 epochs) a 2-point line.
  const counts = [...svg.matchAll(/<polyline [^>]*points="([^"]*)"/g)].map((m) => m[1]!.split(' ').length);
  t.same(counts, [10, 2, 10]);
  t.same(readdirSync(run).sort(), ['metrics.jsonl', 'plot.svg']);
  // Run again over the existing file: replaced, still nothing else left behind.
  t.equal(plot([run, '--metrics', 'lr']).code, 0);
  t.equal(readFileSync(join(run, 'plot.svg'), 'utf8').match(/<g class="panel"/g)!.length, 1);
  t.same(readdirSync(run).sort(), ['metrics.jsonl', 'plot.svg']);
});

t.test('two runs to PNG of the requested size, epoch axis, chosen metrics', async (t) => {
  const dir = tempDir(t, 'plot-cli-');
  const a = makeRun(join(dir, 'a'), { val: true });
  const b = makeRun(join(dir, 'b'));
  const out = join(dir, 'charts', 'cmp.png');
  const r = plot([a, b, '--out', out, '--x', 'epoch', '--metrics', 'loss, val_top1,train_top1', '--width', '640', '--height', '700', '--title', 'A vs B']);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /warning: b has no val_top1/);
  const png = readFileSync(out);
  t.same([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  t.same([png.readUInt32BE(16), png.readUInt32BE(20)], [640, 700]);
  const twice = plot([a, '--out', join(dir, 'x2.png'), '--metrics', 'loss', '--scale', '2', '--width', '500', '--height', '400']);
  t.equal(twice.code, 0, twice.stderr);
  t.match(twice.stderr, /PNG 1000x800/);
  const p2 = readFileSync(join(dir, 'x2.png'));
  t.same([p2.readUInt32BE(16), p2.readUInt32BE(20)], [1000, 800]);
  // The same runs under --x samples: 64 .. 640 images (10 updates of 64) -> ticks 0 .. 700 by 100.
  const svgOut = join(dir, 's.svg');
  t.equal(plot([a, b, '--out', svgOut, '--x', 'samples', '--metrics', 'loss']).code, 0);
  const svg = readFileSync(svgOut, 'utf8');
  t.equal(svg.match(/<g class="run"/g)!.length, 2);
  t.match(svg, />training images seen</);
  t.match(svg, />0<\/text><text[^>]*>100<\/text>(<text[^>]*>[2-6]00<\/text>){5}<text[^>]*>700</);
});

t.test('malformed lines are skipped with file:line warnings', async (t) => {
  const run = makeRun(join(tempDir(t, 'plot-cli-'), 'r'), { extra: ['{"type":"step","epoch":1,"st'] });
  writeFileSync(join(run, 'metrics.jsonl'), `not json\n${readFileSync(join(run, 'metrics.jsonl'), 'utf8')}`);
  const r = plot([run]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /warning: .*r\/metrics\.jsonl:1: malformed line skipped \(invalid JSON/);
  t.match(r.stderr, /warning: .*r\/metrics\.jsonl:14: malformed line skipped/);
  t.match(r.stderr, /3 panels: loss, train_top1, images_per_sec/);
});

t.test('data errors exit 1 naming the path', async (t) => {
  const dir = tempDir(t, 'plot-cli-');
  const missing = plot([join(dir, 'nope')]);
  t.equal(missing.code, 1);
  t.match(missing.stderr, /plot: .*nope: no such folder/);
  mkdirSync(join(dir, 'empty-dir'));
  const noFile = plot([join(dir, 'empty-dir')]);
  t.equal(noFile.code, 1);
  t.match(noFile.stderr, /empty-dir: no metrics\.jsonl in this folder/);
  mkdirSync(join(dir, 'empty-file'));
  writeFileSync(join(dir, 'empty-file', 'metrics.jsonl'), '\n');
  const empty = plot([join(dir, 'empty-file')]);
  t.equal(empty.code, 1);
  t.match(empty.stderr, /empty-file\/metrics\.jsonl: empty file/);
  mkdirSync(join(dir, 'junk'));
  writeFileSync(join(dir, 'junk', 'metrics.jsonl'), 'x\ny\n');
  const junk = plot([join(dir, 'junk')]);
  t.equal(junk.code, 1);
  t.match(junk.stderr, /junk\/metrics\.jsonl:1: malformed/);
  t.match(junk.stderr, /junk\/metrics\.jsonl:2: malformed/);
  t.match(junk.stderr, /plot: .*junk\/metrics\.jsonl: no valid records left \(2 malformed lines skipped\)/);
  // A good run next to a bad one still fails, and writes nothing.
  const good = makeRun(join(dir, 'good'));
  t.equal(plot([good, join(dir, 'junk')]).code, 1);
  t.notOk(existsSync(join(good, 'plot.svg')));
  // An output path that cannot be created.
  writeFileSync(join(dir, 'a-file'), 'x');
  const unwritable = plot([good, '--out', join(dir, 'a-file', 'p.svg')]);
  t.equal(unwritable.code, 1);
  t.match(unwritable.stderr, /a-file\/p\.svg: cannot write/);
  t.same(
    readdirSync(dir).filter((f) => f.includes('.tmp')),
    [],
  );
});

t.test('usage errors exit 2', async (t) => {
  const run = makeRun(join(tempDir(t, 'plot-cli-'), 'r'), { val: true });
  const none = plot([]);
  t.equal(none.code, 2);
  t.match(none.stderr, /give at least one run folder/);
  t.match(none.stderr, /npm run plot -- --help/);
  const unknown = plot([run, '--metrics', 'loss,accuracy,top1']);
  t.equal(unknown.code, 2);
  t.match(
    unknown.stderr,
    /unknown metrics "accuracy", "top1"; available in this run: loss, lr, images_per_sec, stall_pct, wait_ms, compute_ms \(per update\); train_loss, train_top1, train_top5, val_loss, val_top1, val_top5, images_per_sec, stall_pct, seconds \(per epoch\)/,
  );
  t.notOk(existsSync(join(run, 'plot.svg')));
  const badX = plot([run, '--x', 'time']);
  t.equal(badX.code, 2);
  t.match(badX.stderr, /--x must be one of step, epoch, samples, got "time"/);
  const badOut = plot([run, '--out', 'plot.pdf']);
  t.equal(badOut.code, 2);
  t.match(badOut.stderr, /--out must end in \.svg or \.png/);
  const badOpt = plot([run, '--colour', 'red']);
  t.equal(badOpt.code, 2);
  t.match(badOpt.stderr, /Unknown option '--colour'/);
  const badWidth = plot([run, '--width', '12.5']);
  t.equal(badWidth.code, 2);
  t.match(badWidth.stderr, /--width must be a positive whole number/);
  const small = plot([run, '--height', '100']);
  t.equal(small.code, 2);
  t.match(small.stderr, /height 100 is too small for 3 panels/);
});
