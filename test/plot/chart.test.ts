import sharp from 'sharp';
import t from 'tap';
import { decimate, renderChart, segments, type ChartSpec } from '../../src/plot/chart.ts';
import { svgToPng } from '../../src/plot/output.ts';
import { escapeXml, n } from '../../src/plot/svg.ts';

interface XmlElement {
  name: string;
  attrs: Record<string, string>;
}

/**
 * A small well-formedness check: one root, tags nest and close in order, attributes are
 * quoted and unique, and text and attribute values use only the five XML entities (or
 * numeric ones). Returns the elements in document order.
 */
function parseXml(xml: string): XmlElement[] {
  let s = xml.replace(/^<\?xml[^?]*\?>\s*/, '');
  const elements: XmlElement[] = [];
  const stack: string[] = [];
  let roots = 0;
  const checkText = (txt: string, where: string): void => {
    if (/[<>]/.test(txt)) throw new Error(`raw < or > in ${where}: ${txt.slice(0, 40)}`);
    for (const m of txt.matchAll(/&([^;]*);?/g)) {
      if (!/^(amp|lt|gt|quot|apos|#\d+|#x[0-9a-f]+)$/i.test(m[1]!) || !m[0].endsWith(';')) throw new Error(`bad entity in ${where}: ${m[0]}`);
    }
  };
  while (s.length) {
    const lt = s.indexOf('<');
    if (lt < 0) {
      if (s.trim()) throw new Error(`text after the root: ${s.slice(0, 40)}`);
      break;
    }
    const txt = s.slice(0, lt);
    if (stack.length === 0 && txt.trim()) throw new Error(`text outside the root: ${txt.slice(0, 40)}`);
    checkText(txt, 'text');
    const gt = s.indexOf('>', lt);
    if (gt < 0) throw new Error('unterminated tag');
    const tag = s.slice(lt + 1, gt);
    s = s.slice(gt + 1);
    if (tag.startsWith('/')) {
      const name = tag.slice(1).trim();
      const open = stack.pop();
      if (open !== name) throw new Error(`</${name}> closes <${open}>`);
      continue;
    }
    const selfClosing = tag.endsWith('/');
    const body = selfClosing ? tag.slice(0, -1) : tag;
    const m = /^([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"]*")*)\s*$/.exec(body);
    if (!m) throw new Error(`malformed tag <${tag.slice(0, 60)}>`);
    const attrs: Record<string, string> = {};
    for (const a of m[2]!.matchAll(/([\w:.-]+)="([^"]*)"/g)) {
      if (a[1]! in attrs) throw new Error(`duplicate attribute ${a[1]} on <${m[1]}>`);
      checkText(a[2]!, `attribute ${a[1]}`);
      attrs[a[1]!] = a[2]!
        .replace(/&lt;/g, '<')
        .replace(/&gt;/g, '>')
        .replace(/&quot;/g, '"')
        .replace(/&apos;/g, "'")
        .replace(/&amp;/g, '&');
    }
    if (stack.length === 0) roots++;
    elements.push({ name: m[1]!, attrs });
    if (!selfClosing) stack.push(m[1]!);
  }
  if (stack.length) throw new Error(`unclosed <${stack.join('> <')}>`);
  if (roots !== 1) throw new Error(`${roots} root elements`);
  return elements;
}

function pointsOf(el: XmlElement): [number, number][] {
  return el.attrs['points']!.split(' ').map((p) => p.split(',').map(Number) as [number, number]);
}

/** Elements inside the <g class="run" data-run=i> of panel p, by walking the flat list. */
function runElements(svg: string, panel: number, run: number): XmlElement[] {
  const panels = svg.split('<g class="panel"').slice(1);
  const chunk = panels[panel]!.split(`<g class="run" data-run="${run}"`)[1];
  if (chunk === undefined) return [];
  return parseXml(`<g${chunk.slice(0, chunk.indexOf('</g>'))}</g>`).slice(1);
}

// The hand-computed example. Layout rules (src/plot/chart.ts), for width 400, one panel, no title:
//   legend: 1 row (20 px) from y = 16, then 8 px -> the panel title band (22 px) from y = 44;
//   plot top = 66, plot height 200 (default), bottom = 266.
//   y ticks: 200 / 45 -> target 4; range [0, 1] -> step 0.2: 0.0 ... 1.0; the widest label
//   "0.0" is narrower than the 28-pixel minimum -> plot left = 16 + 28 + 5 + 6 = 55.
//   plot width = 400 - 55 - 28 (right margin) = 317 -> x target round(3.17) = 3;
//   range [0, 10] -> step 5: 0, 5, 10.
//   px(x) = 55 + x / 10 * 317; py(y) = 266 - y * 200.
//   height = 266 + 20 (x tick labels) + 22 (x label) + 16 = 324.
const tiny: ChartSpec = {
  runs: ['a', 'b'],
  xLabel: 'update',
  width: 400,
  panels: [
    {
      name: 'm',
      description: 'a metric',
      series: [
        [
          { x: 0, y: 0 },
          { x: 2.5, y: 0.25 },
          { x: 5, y: null },
          { x: 7.5, y: 0.75 },
          { x: 10, y: 1 },
        ],
        [
          { x: 0, y: null },
          { x: 5, y: 0.5 },
          { x: 10, y: null },
        ],
      ],
    },
  ],
};

t.test('tiny chart: valid XML, layout and data-to-pixel mapping as computed by hand', async (t) => {
  const { svg, layout } = renderChart(tiny);
  const els = parseXml(svg);
  t.equal(els[0]!.name, 'svg');
  t.same([els[0]!.attrs['width'], els[0]!.attrs['height'], els[0]!.attrs['viewBox']], ['400', '324', '0 0 400 324']);
  t.same(layout.panels[0]!.plot, { x: 55, y: 66, w: 317, h: 200 });
  t.same(layout.xTicks.values, [0, 5, 10]);
  t.same(layout.panels[0]!.yTicks!.values, [0, 0.2, 0.4, 0.6, 0.8, 1]);
  const area = els.find((e) => e.attrs['class'] === 'plot-area')!;
  t.same([area.attrs['x'], area.attrs['y'], area.attrs['width'], area.attrs['height']], ['55', '66', '317', '200']);

  // Run a: the gap at x = 5 splits it into two 2-point lines; 4 points -> markers on each.
  const a = runElements(svg, 0, 0);
  const lines = a.filter((e) => e.name === 'polyline');
  t.equal(lines.length, 2);
  t.same(pointsOf(lines[0]!), [
    [55, 266],
    [134.25, 216],
  ]);
  t.same(pointsOf(lines[1]!), [
    [292.75, 116],
    [372, 66],
  ]);
  t.same(
    a.filter((e) => e.name === 'circle').map((c) => [Number(c.attrs['cx']), Number(c.attrs['cy'])]),
    [
      [55, 266],
      [134.25, 216],
      [292.75, 116],
      [372, 66],
    ],
  );
  // Run b: a lone point between gaps is a dot, not a line.
  const b = runElements(svg, 0, 1);
  t.equal(b.filter((e) => e.name === 'polyline').length, 0);
  t.same(
    b.filter((e) => e.name === 'circle').map((c) => [c.attrs['cx'], c.attrs['cy']]),
    [['213.5', '166']],
  );

  // Ticks and labels: 3 x labels, 6 y labels, the axis label, the legend names.
  const texts = svg.match(/<text[^>]*>[^<]*<\/text>/g)!.map((s) => s.replace(/<[^>]+>/g, ''));
  t.same(texts, ['a', 'b', '0', '5', '10', '0.0', '0.2', '0.4', '0.6', '0.8', '1.0', 'update']);
  t.match(svg, /<tspan font-weight="bold" fill="#222">m<\/tspan><tspan dx="8" fill="#777">a metric<\/tspan>/);
  t.equal(els.filter((e) => e.name === 'clipPath').length, 1);
  // Each run has its own colour, the same in the legend and the lines.
  const colours = els.filter((e) => e.attrs['class'] === 'run').map((e) => e.attrs['stroke']);
  t.equal(new Set(colours).size, 2);
  t.match(svg, new RegExp(`<line [^>]*stroke="${colours[0]}"`));
});

t.test('text is escaped; several panels share the x axis; a panel with no data says so', async (t) => {
  const { svg, layout } = renderChart({
    runs: ['<run & "one">'],
    xLabel: 'x',
    title: "Tom's <plot>",
    panels: [
      {
        name: 'p1',
        description: '',
        series: [
          [
            { x: 1, y: 10 },
            { x: 3, y: 30 },
          ],
        ],
      },
      { name: 'p2', description: '', series: [null] },
      {
        name: 'p3',
        description: 'd',
        series: [
          [
            { x: 2, y: -1 },
            { x: 4, y: 1 },
          ],
        ],
      },
    ],
  });
  const els = parseXml(svg);
  t.equal(els.filter((e) => e.attrs['class'] === 'panel').length, 3);
  t.match(svg, /&lt;run &amp; &quot;one&quot;&gt;/);
  t.match(svg, /Tom&apos;s &lt;plot&gt;/);
  t.match(svg, />no data</);
  t.equal(layout.panels[1]!.yTicks, null);
  const xs = layout.panels.map((p) => p.plot.x);
  t.same(new Set(xs).size, 1, 'panels aligned');
  t.ok(layout.panels[1]!.plot.y > layout.panels[0]!.plot.y + layout.panels[0]!.plot.h, 'stacked downwards');
  t.same(layout.xTicks.values[0], 1);
  t.same(layout.xTicks.values.at(-1), 4);
  t.equal(els.filter((e) => e.name === 'polyline').length, 2);
});

t.test('width and height options', async (t) => {
  const { layout } = renderChart({ ...tiny, width: 640, height: 500 });
  t.equal(layout.width, 640);
  t.equal(layout.height, 500);
  // fixed space = 16 + 20 + 8 + 22 + 20 + 22 + 16 = 124 -> plot height 376.
  t.equal(layout.panels[0]!.plot.h, 376);
  t.throws(() => renderChart({ ...tiny, height: 150 }), { message: /height 150 is too small for 1 panel: needs at least 184 pixels/ });
  t.throws(() => renderChart({ ...tiny, width: 100 }), RangeError);
  t.throws(() => renderChart({ ...tiny, panels: [] }), RangeError);
});

t.test('segments and decimation', async (t) => {
  t.same(
    segments([
      { x: 0, y: 1 },
      { x: 1, y: null },
      { x: 2, y: Number.NaN },
      { x: 3, y: 2 },
      { x: 4, y: 3 },
    ]).map((s) => s.map((p) => p.x)),
    [[0], [3, 4]],
  );
  const few: [number, number][] = [
    [0, 1],
    [0.5, 2],
    [1, 3],
  ];
  t.same(decimate(few, 10), few, 'short lines are kept as they are');
  // Column 0 holds 6 points: keep the first (y 5), the lowest value (y 1), the highest (y 9)
  // and the last (y 4), in order; column 1 keeps its only point.
  const col: [number, number][] = [
    [0.1, 5],
    [0.2, 1],
    [0.3, 7],
    [0.4, 9],
    [0.5, 2],
    [0.6, 4],
    [1.5, 3],
  ];
  t.same(decimate(col, 1), [
    [0.1, 5],
    [0.2, 1],
    [0.4, 9],
    [0.6, 4],
    [1.5, 3],
  ]);
  // A long noisy series in the chart: at most 4 points per pixel column, extremes kept.
  const pts = Array.from({ length: 20000 }, (_, i) => ({ x: i, y: i === 12345 ? 100 : Math.sin(i) }));
  const { svg, layout } = renderChart({ runs: ['r'], xLabel: 'x', width: 400, panels: [{ name: 'm', description: '', series: [pts] }] });
  const lines = parseXml(svg).filter((e) => e.name === 'polyline');
  t.equal(lines.length, 1);
  const p = pointsOf(lines[0]!);
  t.ok(p.length <= 4 * (layout.panels[0]!.plot.w + 1) && p.length > layout.panels[0]!.plot.w, `${p.length} points`);
  t.equal(layout.panels[0]!.yTicks!.hi, 100);
  t.equal(Math.min(...p.map((q) => q[1])), layout.panels[0]!.plot.y, 'the one spike to 100 reaches the top');
});

t.test('svg helpers', async (t) => {
  t.equal(escapeXml(`a<b>&"c'`), 'a&lt;b&gt;&amp;&quot;c&apos;');
  t.same([n(1.005), n(12.5), n(3), n(-0.001), n(1 / 3)], ['1', '12.5', '3', '0', '0.33']);
});

t.test('PNG: signature, requested size, text renders', async (t) => {
  const { svg } = renderChart({ ...tiny, width: 500, height: 400 });
  const png = await svgToPng(svg);
  t.same([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], 'PNG signature');
  t.equal(png.subarray(12, 16).toString('latin1'), 'IHDR');
  t.same([png.readUInt32BE(16), png.readUInt32BE(20)], [500, 400]);
  const meta = await sharp(png).metadata();
  t.same([meta.format, meta.width, meta.height], ['png', 500, 400]);
  const twice = await svgToPng(svg, 2);
  t.same([twice.readUInt32BE(16), twice.readUInt32BE(20)], [1000, 800]);

  // Fonts: a text-only image must get dark pixels (librsvg draws nothing without a font).
  const textOnly = `<svg xmlns="http://www.w3.org/2000/svg" width="120" height="30"><rect width="120" height="30" fill="#fff"/><text x="4" y="22" font-size="18" font-family="DejaVu Sans, sans-serif" fill="#000">loss 0.5</text></svg>`;
  const { data } = await sharp(await svgToPng(textOnly))
    .greyscale()
    .raw()
    .toBuffer({ resolveWithObject: true });
  const dark = data.filter((v) => v < 128).length;
  t.ok(dark > 50, `text rendered into ${dark} dark pixels (0 means no usable font for librsvg: install fonts-dejavu-core)`);
});
