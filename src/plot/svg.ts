// Just enough SVG writing: escaped text, elements from attribute maps, compact numbers.

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]!);
}

/** A coordinate with at most 2 decimals and no trailing zeros ("12.5", "3", "-0.25"). */
export function n(v: number): string {
  const r = Math.round(v * 100) / 100;
  return String(Object.is(r, -0) ? 0 : r);
}

export type Attrs = Record<string, string | number | undefined>;

function attrs(a: Attrs): string {
  let s = '';
  for (const [k, v] of Object.entries(a)) {
    if (v === undefined) continue;
    s += ` ${k}="${escapeXml(typeof v === 'number' ? n(v) : v)}"`;
  }
  return s;
}

/** <name attrs/> or <name attrs>children</name>; children are already-built markup. */
export function el(name: string, a: Attrs = {}, children?: string | readonly string[]): string {
  if (children === undefined) return `<${name}${attrs(a)}/>`;
  const inner = typeof children === 'string' ? children : children.join('');
  return `<${name}${attrs(a)}>${inner}</${name}>`;
}

/** A <text> element with escaped content. */
export function text(content: string, a: Attrs = {}): string {
  return el('text', a, escapeXml(content));
}

/** Rough advance width of text in a sans-serif font (DejaVu Sans is about 0.6 em a character). */
export function textWidth(s: string, fontSize: number): number {
  let w = 0;
  for (const ch of s) w += /[il.,:;'|!()\[\] ]/.test(ch) ? 0.32 : /[mwMW@%]/.test(ch) ? 0.9 : /[A-Z]/.test(ch) ? 0.7 : 0.6;
  return w * fontSize;
}
