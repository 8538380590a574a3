// Writing the chart: SVG as is, PNG by rasterising the SVG with sharp (librsvg underneath; text
// uses the system's fonts through fontconfig). Either way under a temporary name, then renamed.
import { mkdirSync } from 'node:fs';
import { dirname, extname } from 'node:path';
import sharp from 'sharp';
import { atomicWriteFile } from '../shared/atomic-write.ts';

export type OutputFormat = 'svg' | 'png';

export function formatFor(path: string): OutputFormat | undefined {
  const ext = extname(path).toLowerCase();
  return ext === '.svg' ? 'svg' : ext === '.png' ? 'png' : undefined;
}

/** The SVG as a PNG; scale 2 gives twice the pixels in each direction (sharper text). */
export async function svgToPng(svg: string, scale = 1): Promise<Buffer> {
  return sharp(Buffer.from(svg), { density: 72 * scale })
    .png({ compressionLevel: 9 })
    .toBuffer();
}

export async function writeChart(path: string, svg: string, opts: { scale?: number } = {}): Promise<{ bytes: number; format: OutputFormat }> {
  const format = formatFor(path);
  if (!format) throw new Error(`${path}: the output must end in .svg or .png`);
  const data = format === 'svg' ? svg : await svgToPng(svg, opts.scale ?? 1);
  mkdirSync(dirname(path), { recursive: true });
  atomicWriteFile(path, data);
  return { bytes: Buffer.byteLength(data), format };
}
