// The differentiable pieces of the MLPs, each with a hand-written gradient (tf.customGrad): the
// autodiff versions record many small kernels per op, and on the wasm/cpu backends each kernel
// is a full pass over memory. Numerics follow PyTorch: exact (erf) GELU, biased variance in
// LayerNorm, eps inside the square root.
import * as tf from '@tensorflow/tfjs';
import { geluAndDerivative, simdKernelsActive } from './simd/simd-kernels.ts';

type Forward = (
  inputs: tf.Tensor[],
  save: tf.GradSaveFunc,
) => {
  value: tf.Tensor;
  gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => tf.Tensor[];
};

/** tf.customGrad with the inputs as an array and the save function apart. */
function withGrad(f: Forward): (...inputs: tf.Tensor[]) => tf.Tensor {
  const op = tf.customGrad(((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
    const save = args.pop() as tf.GradSaveFunc;
    return f(args as tf.Tensor[], save);
  }) as Parameters<typeof tf.customGrad<tf.Tensor>>[0]);
  return (...inputs: tf.Tensor[]) => op(...inputs);
}

const SQRT1_2 = Math.SQRT1_2;
const INV_SQRT_2PI = 1 / Math.sqrt(2 * Math.PI);

const geluOp = withGrad(([x], save) => {
  // Phi is kept for the backward pass instead of re-running erf, the most expensive kernel here.
  const phi = tf.tidy(() => tf.mul(0.5, tf.add(1, tf.erf(tf.mul(x!, SQRT1_2)))));
  save([x!, phi]);
  return {
    value: tf.mul(x!, phi),
    gradFunc: (dy, [xs, ph]) =>
      // d/dx x*Phi(x) = Phi(x) + x * pdf(x), pdf(x) = exp(-x^2/2) / sqrt(2 pi).
      [tf.tidy(() => tf.mul(dy, tf.add(ph!, tf.mul(xs!, tf.mul(INV_SQRT_2PI, tf.exp(tf.mul(-0.5, tf.square(xs!))))))))],
  };
});

// On wasm: value and derivative from one SIMD pass (simd/kernels.c); the backward pass is dy * d.
const geluSimdOp = withGrad(([x], save) => {
  const [y, d] = geluAndDerivative(x!);
  save([d]);
  return { value: y, gradFunc: (dy, [dd]) => [tf.mul(dy, dd!)] };
});

/** GELU(x) = x * Phi(x) with Phi the standard normal CDF (PyTorch's nn.GELU() default). */
export function gelu<T extends tf.Tensor>(x: T): T {
  return (simdKernelsActive() ? geluSimdOp(x) : geluOp(x)) as T;
}

export const LAYER_NORM_EPS = 1e-5;

const layerNormOp = withGrad(([x, weight, bias], save) => {
  const [xhat, rstd] = tf.tidy(() => {
    const mean = tf.mean(x!, -1, true);
    const centred = tf.sub(x!, mean);
    const variance = tf.mean(tf.square(centred), -1, true);
    const r = tf.rsqrt(tf.add(variance, LAYER_NORM_EPS));
    return [tf.mul(centred, r), r];
  }) as [tf.Tensor, tf.Tensor];
  save([xhat, rstd, weight!]);
  return {
    value: tf.add(tf.mul(xhat, weight!), bias!),
    gradFunc: (dy, [xh, rs, w]) =>
      tf.tidy(() => {
        const dxhat = tf.mul(dy, w!);
        // dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
        const m1 = tf.mean(dxhat, -1, true);
        const m2 = tf.mean(tf.mul(dxhat, xh!), -1, true);
        const dx = tf.mul(rs!, tf.sub(tf.sub(dxhat, m1), tf.mul(xh!, m2)));
        return [dx, columnSum(tf.mul(dy, xh!)), columnSum(dy)];
      }),
  };
});

/** LayerNorm over the last axis of [n, d], affine weight and bias [d], eps 1e-5 (nn.LayerNorm). */
export function layerNorm(x: tf.Tensor2D, weight: tf.Tensor1D, bias: tf.Tensor1D): tf.Tensor2D {
  return layerNormOp(x, weight, bias) as tf.Tensor2D;
}

/**
 * Sum over the rows of a [n, d] tensor: the gradient of a bias broadcast over a batch. On wasm
 * it is written as ones[1, n] x X, which XNNPACK does ~7x faster than the Sum kernel (whose
 * axis-0 reduction transposes first).
 */
export function columnSum(x: tf.Tensor): tf.Tensor1D {
  if (tf.getBackend() !== 'wasm') return tf.sum(x, 0);
  return tf.tidy(() => tf.reshape(tf.matMul(tf.ones([1, x.shape[0]!]), x as tf.Tensor2D), [x.shape[1]!]));
}

const denseOp = withGrad(([x, w, b], save) => {
  save([x!, w!]);
  return {
    value: tf.fused.matMul({ a: x as tf.Tensor2D, b: w as tf.Tensor2D, bias: b }),
    gradFunc: (dy, [xs, ws]) => [tf.matMul(dy, ws!, false, true), tf.matMul(xs!, dy, true, false), columnSum(dy)],
  };
});

// The input enters through the closure, not as an op input: nothing upstream needs its
// gradient (it is data), and for the first layer dX would be the largest matMul of the step.
// It is still saved, which keeps it alive until the backward pass whatever scope created it.
const denseNoInputGrad = (x: tf.Tensor2D) =>
  withGrad(([w, b], save) => {
    save([x]);
    return {
      value: tf.fused.matMul({ a: x, b: w as tf.Tensor2D, bias: b }),
      gradFunc: (dy, [xs]) => [tf.matMul(xs!, dy, true, false), columnSum(dy)],
    };
  });

/**
 * y = x W + b with W stored [in, out] (the transpose of PyTorch's Linear weight), so the forward
 * matMul is untransposed - the only form the wasm backend sends to XNNPACK directly.
 * `inputGrad: false` for layers fed by data: then no gradient flows to x.
 */
export function dense(x: tf.Tensor2D, w: tf.Tensor2D, b: tf.Tensor1D, opts: { inputGrad?: boolean } = {}): tf.Tensor2D {
  if (opts.inputGrad === false) return denseNoInputGrad(x)(w, b) as tf.Tensor2D;
  return denseOp(x, w, b) as tf.Tensor2D;
}

const softCrossEntropyOp = withGrad(([logits, target], save) => {
  const n = logits!.shape[0]!;
  const logp = tf.logSoftmax(logits!);
  save([logp, target!]);
  return {
    value: tf.tidy(() => tf.div(tf.neg(tf.sum(tf.mul(target!, logp))), n)),
    gradFunc: (dy, [lp, t]) =>
      tf.tidy(() => {
        const scale = tf.div(dy, n);
        return [tf.mul(tf.sub(tf.exp(lp!), t!), scale), tf.mul(lp!, tf.neg(scale))];
      }),
  };
});

/**
 * Mean over the batch of the cross-entropy between softmax(logits) and soft targets whose rows
 * sum to 1 (label smoothing and MixUp both reduce to such targets). Gradient: (softmax - t) / n.
 */
export function softCrossEntropy(logits: tf.Tensor2D, target: tf.Tensor2D): tf.Scalar {
  return softCrossEntropyOp(logits, target) as tf.Scalar;
}
