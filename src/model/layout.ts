// The parameter list of a model, in the reference code's state-dict order and names, with
// PyTorch shapes (Linear weight [out, in]). Everything that needs to know "which tensors exist"
// (init, checkpoints, counts, FLOPs) derives from this one list.
import { inputDim, type ArchSpec, type ModelShape } from './arch.ts';

export type ParamRole = 'linear.weight' | 'linear.bias' | 'norm.weight' | 'norm.bias';

export interface ParamEntry {
  /** State-dict key, e.g. "blocks.3.block.0.weight". */
  name: string;
  /** PyTorch shape: [out, in] for Linear weights, [n] otherwise. */
  shape: number[];
  role: ParamRole;
  /** Fan-in of the owning Linear (drives PyTorch's default init); 0 for LayerNorm. */
  fanIn: number;
}

function linear(prefix: string, fanIn: number, fanOut: number): ParamEntry[] {
  return [
    { name: `${prefix}.weight`, shape: [fanOut, fanIn], role: 'linear.weight', fanIn },
    { name: `${prefix}.bias`, shape: [fanOut], role: 'linear.bias', fanIn },
  ];
}

function norm(prefix: string, n: number): ParamEntry[] {
  return [
    { name: `${prefix}.weight`, shape: [n], role: 'norm.weight', fanIn: 0 },
    { name: `${prefix}.bias`, shape: [n], role: 'norm.bias', fanIn: 0 },
  ];
}

/** Number of hidden Linear(w -> w) layers of a standard MLP: the reference's S_<d> has d - 1. */
export function standardLayers(spec: ArchSpec): number {
  return spec.depth - 1;
}

/**
 * Registration order of the reference modules (linear_in, linear_out, then the blocks or
 * layers, then the layernorms), which is the order PyTorch's state_dict() lists them in.
 */
export function paramLayout(spec: ArchSpec, shape: ModelShape): ParamEntry[] {
  const w = spec.width;
  const out: ParamEntry[] = [...linear('linear_in', inputDim(shape), w), ...linear('linear_out', w, shape.numClasses)];
  if (spec.kind === 'bottleneck') {
    const wide = spec.expansion * w;
    for (let i = 0; i < spec.depth; i++) {
      out.push(...linear(`blocks.${i}.block.0`, w, wide), ...linear(`blocks.${i}.block.2`, wide, w));
    }
    for (let i = 0; i < spec.depth; i++) out.push(...norm(`layernorms.${i}`, w));
  } else {
    const n = standardLayers(spec);
    for (let i = 0; i < n; i++) out.push(...linear(`layers.${i}`, w, w));
    for (let i = 0; i < n; i++) out.push(...norm(`layernorms.${i}`, w));
  }
  return out;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function countParams(spec: ArchSpec, shape: ModelShape): number {
  return paramLayout(spec, shape).reduce((s, p) => s + numel(p.shape), 0);
}

/** Multiply-adds of one forward pass per sample, counting the Linear layers only (as the paper does). */
export function forwardMacs(spec: ArchSpec, shape: ModelShape): number {
  return paramLayout(spec, shape)
    .filter((p) => p.role === 'linear.weight')
    .reduce((s, p) => s + numel(p.shape), 0);
}

/** FLOPs of one training sample: forward + backward = 3x forward, 2 FLOPs per multiply-add. */
export function trainFlopsPerSample(spec: ArchSpec, shape: ModelShape): number {
  return 3 * 2 * forwardMacs(spec, shape);
}

/**
 * Rough peak bytes of one training step, for warnings and --dry-run. Per sample: the input three
 * times (batch, MixUp output, the transpose for linear_in's weight gradient), what the backward
 * pass keeps per layer (~16 widths for a bottleneck block: LayerNorm output and normalised input,
 * wide pre-activation, Phi, GELU output, block output, residual; ~5 for a standard layer),
 * logits with their soft targets and gradient, a wide temporary - times 1.6 for gradients alive
 * at the same time, which matches tf.profile's peakBytes on wasm within ~20% for small models.
 * Per parameter: weights, gradient and optimizer slots, fp32.
 */
export function estimateTrainBytes(spec: ArchSpec, shape: ModelShape, microBatch: number, optimizerSlots: number): number {
  const w = spec.width;
  const perLayer = spec.kind === 'bottleneck' ? 16 * w * Math.max(1, spec.expansion / 4) : 5 * w;
  const layers = spec.kind === 'bottleneck' ? spec.depth : standardLayers(spec);
  const perSample = 1.6 * (3 * inputDim(shape) + layers * perLayer + 4 * shape.numClasses + 2 * spec.expansion * w);
  return Math.round(4 * (microBatch * perSample + countParams(spec, shape) * (2 + optimizerSlots)));
}
