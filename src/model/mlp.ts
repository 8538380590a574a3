// The bottleneck and standard MLPs of the paper as tf.Variables plus a forward function.
// Linear weights live in tfjs as [in, out] (PyTorch's [out, in] transposed) so every forward
// matMul is untransposed; conversion happens only at the state-dict boundary.
import * as tf from '@tensorflow/tfjs';
import { inputDim, parseArch, validateShape, type ArchSpec, type ModelShape } from './arch.ts';
import { CheckpointError } from './errors.ts';
import { initParams } from './init.ts';
import { numel, paramLayout, standardLayers, type ParamEntry } from './layout.ts';
import { dense, gelu, layerNorm } from './ops.ts';
import type { Preprocessing } from './preprocessing.ts';

export interface ModelConfig extends ModelShape {
  arch: string;
  /** What the model expects of its inputs (absent in models written before it was recorded). */
  preprocessing?: Preprocessing;
  /** Class names, index = label. */
  classes?: string[];
}

export interface MlpParam {
  entry: ParamEntry;
  /** Shape in tfjs: PyTorch's shape reversed for Linear weights, the same otherwise. */
  tfShape: number[];
  variable: tf.Variable;
}

/** A named tensor in PyTorch layout, the unit of checkpoints. */
export interface HostTensor {
  shape: number[];
  data: Float32Array;
}

let instances = 0;

function tfShapeOf(e: ParamEntry): number[] {
  return e.role === 'linear.weight' ? [e.shape[1]!, e.shape[0]!] : [...e.shape];
}

/** Transposes a row-major [rows, cols] matrix into a new [cols, rows] one. */
export function transpose2d(src: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(src.length);
  // Blocked so both the reads and the writes stay within a few cache lines at a time.
  const B = 32;
  for (let r0 = 0; r0 < rows; r0 += B) {
    const r1 = Math.min(rows, r0 + B);
    for (let c0 = 0; c0 < cols; c0 += B) {
      const c1 = Math.min(cols, c0 + B);
      for (let r = r0; r < r1; r++) {
        const base = r * cols;
        for (let c = c0; c < c1; c++) out[c * rows + r] = src[base + c]!;
      }
    }
  }
  return out;
}

export class Mlp {
  readonly spec: ArchSpec;
  readonly config: ModelConfig;
  readonly params: MlpParam[];
  private readonly byName: Map<string, tf.Variable>;

  /** A freshly initialised model (PyTorch's default init, seeded). */
  constructor(config: ModelConfig, seed = 0) {
    validateShape(config);
    this.spec = parseArch(config.arch);
    this.config = {
      arch: this.spec.name,
      res: config.res,
      channels: config.channels,
      numClasses: config.numClasses,
      ...(config.preprocessing ? { preprocessing: config.preprocessing } : {}),
      ...(config.classes ? { classes: config.classes } : {}),
    };
    const layout = paramLayout(this.spec, this.config);
    const init = initParams(layout, seed);
    // Variable names must be unique per engine; a counter keeps several models apart (tests).
    const tag = `mlp${instances++}`;
    this.params = layout.map((entry) => {
      const tfShape = tfShapeOf(entry);
      const host = init.get(entry.name)!;
      const values = entry.role === 'linear.weight' ? transpose2d(host, entry.shape[0]!, entry.shape[1]!) : host;
      const variable = tf.tidy(() => tf.variable(tf.tensor(values, tfShape, 'float32'), true, `${tag}/${entry.name}`));
      return { entry, tfShape, variable };
    });
    this.byName = new Map(this.params.map((p) => [p.entry.name, p.variable]));
  }

  get inputDim(): number {
    return inputDim(this.config);
  }

  get numParams(): number {
    return this.params.reduce((s, p) => s + numel(p.entry.shape), 0);
  }

  variables(): tf.Variable[] {
    return this.params.map((p) => p.variable);
  }

  private v<R extends tf.Rank>(name: string): tf.Variable<R> {
    const v = this.byName.get(name);
    if (!v) throw new Error(`Mlp ${this.spec.name}: no parameter ${name}`);
    return v as tf.Variable<R>;
  }

  private linear(x: tf.Tensor2D, prefix: string, inputGrad = true): tf.Tensor2D {
    return dense(x, this.v<tf.Rank.R2>(`${prefix}.weight`), this.v<tf.Rank.R1>(`${prefix}.bias`), { inputGrad });
  }

  private norm(x: tf.Tensor2D, prefix: string): tf.Tensor2D {
    return layerNorm(x, this.v<tf.Rank.R1>(`${prefix}.weight`), this.v<tf.Rank.R1>(`${prefix}.bias`));
  }

  /** Logits [n, classes] of a batch [n, c*res*res] (each row one image in C,H,W order). */
  forward(x: tf.Tensor2D): tf.Tensor2D {
    return tf.tidy(() => this.head(this.features(x)));
  }

  /** The body: everything before linear_out, giving [n, width] features. */
  features(x: tf.Tensor2D): tf.Tensor2D {
    if (x.shape[1] !== this.inputDim) {
      throw new RangeError(`Mlp ${this.spec.name}: input has ${x.shape[1]} features, expected ${this.inputDim}`);
    }
    return tf.tidy(() => {
      // The images need no gradient: skipping dX saves the step's largest matMul.
      let h = this.linear(x, 'linear_in', false);
      if (this.spec.kind === 'bottleneck') {
        for (let i = 0; i < this.spec.depth; i++) {
          const u = this.linear(this.norm(h, `layernorms.${i}`), `blocks.${i}.block.0`);
          h = tf.add(h, this.linear(gelu(u) as tf.Tensor2D, `blocks.${i}.block.2`));
        }
      } else {
        for (let i = 0; i < standardLayers(this.spec); i++) {
          h = this.linear(gelu(this.norm(h, `layernorms.${i}`)) as tf.Tensor2D, `layers.${i}`);
        }
      }
      return h;
    });
  }

  /**
   * The head (linear_out) on body features. `inputGrad: false` when nothing upstream needs the
   * features' gradient (a frozen body): the backward pass then skips dX.
   */
  head(h: tf.Tensor2D, opts: { inputGrad?: boolean } = {}): tf.Tensor2D {
    return this.linear(h, 'linear_out', opts.inputGrad ?? true);
  }

  /** Parameters in PyTorch layout and order, copied to the host. */
  stateDict(): Map<string, HostTensor> {
    const out = new Map<string, HostTensor>();
    for (const p of this.params) {
      const data = p.variable.dataSync() as Float32Array;
      const shape = [...p.entry.shape];
      out.set(p.entry.name, {
        shape,
        data: p.entry.role === 'linear.weight' ? transpose2d(data, p.tfShape[0]!, p.tfShape[1]!) : Float32Array.from(data),
      });
    }
    return out;
  }

  /**
   * Replaces every parameter; the names and shapes must match exactly (PyTorch's strict=True).
   * Names in `opts.skip` keep their current values, and `state` may hold them in any shape or
   * not at all (a new head over a pre-trained body).
   */
  loadStateDict(state: ReadonlyMap<string, HostTensor>, where = 'state dict', opts: { skip?: ReadonlySet<string> } = {}): void {
    const skip = opts.skip ?? new Set<string>();
    const params = this.params.filter((p) => !skip.has(p.entry.name));
    const expected = new Set(params.map((p) => p.entry.name));
    const unexpected = [...state.keys()].filter((k) => !expected.has(k) && !skip.has(k));
    const missing = [...expected].filter((k) => !state.has(k));
    if (unexpected.length || missing.length) {
      throw new CheckpointError(where, `does not fit ${this.spec.name}: missing [${missing.join(', ')}], unexpected [${unexpected.join(', ')}]`);
    }
    for (const p of params) {
      const t = state.get(p.entry.name)!;
      if (t.shape.length !== p.entry.shape.length || t.shape.some((d, i) => d !== p.entry.shape[i])) {
        throw new CheckpointError(where, `${p.entry.name} has shape [${t.shape}], ${this.spec.name} needs [${p.entry.shape}]`);
      }
    }
    for (const p of params) {
      const t = state.get(p.entry.name)!;
      // A copy either way: the cpu backend would otherwise keep the caller's array as its storage.
      const values = p.entry.role === 'linear.weight' ? transpose2d(t.data, p.entry.shape[0]!, p.entry.shape[1]!) : t.data.slice();
      tf.tidy(() => p.variable.assign(tf.tensor(values, p.tfShape, 'float32')));
    }
  }

  dispose(): void {
    for (const p of this.params) p.variable.dispose();
  }
}
