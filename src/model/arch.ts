// Architecture names as the reference code spells them: B_<depth>-Wi_<width>[-Ex_<expansion>]
// for the bottleneck MLP, S_<depth>-Wi_<width> for the standard MLP (the reference selects the
// kind with a separate --model flag; here the letter does it).
import { ArchError } from './errors.ts';

export type MlpKind = 'bottleneck' | 'standard';

export interface ArchSpec {
  /** The canonical name, e.g. "B_12-Wi_1024". */
  name: string;
  kind: MlpKind;
  depth: number;
  width: number;
  /** Hidden width of a bottleneck block is expansion * width (4 unless -Ex_ says otherwise). */
  expansion: number;
}

/** The model's input and output sizes, which the name does not carry. */
export interface ModelShape {
  res: number;
  channels: number;
  numClasses: number;
}

const PATTERN = /^([BS])_(\d+)-Wi_(\d+)(?:-Ex_(\d+))?$/;

export function parseArch(name: string): ArchSpec {
  const m = PATTERN.exec(name.trim());
  if (!m) throw new ArchError(name, 'expected B_<depth>-Wi_<width>[-Ex_<expansion>] or S_<depth>-Wi_<width>');
  const kind: MlpKind = m[1] === 'B' ? 'bottleneck' : 'standard';
  const depth = Number(m[2]);
  const width = Number(m[3]);
  const expansion = m[4] === undefined ? 4 : Number(m[4]);
  if (width < 1) throw new ArchError(name, 'width must be at least 1');
  if (expansion < 1) throw new ArchError(name, 'expansion must be at least 1');
  if (kind === 'standard' && m[4] !== undefined) throw new ArchError(name, 'the standard MLP has no expansion');
  // The reference builds S_<d> from d widths, i.e. d - 1 hidden Linear layers: S_0 is meaningless.
  if (kind === 'standard' && depth < 1) throw new ArchError(name, 'the standard MLP needs depth >= 1');
  const canonical = `${m[1]}_${depth}-Wi_${width}${m[4] === undefined ? '' : `-Ex_${expansion}`}`;
  return { name: canonical, kind, depth, width, expansion };
}

export function inputDim(shape: ModelShape): number {
  return shape.channels * shape.res * shape.res;
}

export function validateShape(shape: ModelShape): void {
  const fields: [string, number][] = [
    ['res', shape.res],
    ['channels', shape.channels],
    ['numClasses', shape.numClasses],
  ];
  for (const [k, v] of fields) {
    if (!Number.isInteger(v) || v < 1) throw new RangeError(`model shape: ${k} must be a positive integer, got ${v}`);
  }
}
