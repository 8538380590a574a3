// Element-wise training kernels in WebAssembly SIMD that run on the tfjs wasm backend's own heap:
// the module imports that backend's memory, and every argument is a byte offset of a tensor in it.
// Hence the rules this file keeps: no static data (it would be written into tfjs's heap at
// instantiation), no stack (only scalars and vectors in locals), no libc. simd-kernels.ts checks
// the compiled module has no data section before it instantiates it.
//
// gelu:  y = x * Phi(x) and its derivative d = Phi(x) + x * pdf(x), in one pass. Phi uses
//        Abramowitz & Stegun 7.1.26 for erf (|error| < 1.5e-7, the formula tfjs's cpu and webgl
//        backends use), whose exp(-x^2/2) is also the pdf's: one exp per element for both.
// adamw: torch.optim.AdamW's update with the same float32 operations in the same order as the
//        tf-ops version (src/train/optim/adamw.ts), so results are bit-identical to it.
// lion:  Lion's update, likewise bit-identical to its tf-ops version (the JS kernel in
//        src/train/optim/fused.ts rounds from double instead: equal up to float32 rounding).
#include <wasm_simd128.h>

typedef float f4 __attribute__((vector_size(16)));
typedef int i4 __attribute__((vector_size(16)));

#define EXPORT(name) __attribute__((export_name(#name)))

static inline f4 splat(float v) { return (f4){v, v, v, v}; }

static inline f4 vload(const float *p) { return (f4)wasm_v128_load(p); }
static inline void vstore(float *p, f4 v) { wasm_v128_store(p, (v128_t)v); }

// Loads n < 4 floats into the low lanes (the others 0) without reading past p + n.
static inline f4 load_tail(const float *p, int n) {
  v128_t v = wasm_f32x4_splat(0.0f);
  v = wasm_v128_load32_lane(p, v, 0);
  if (n > 1) v = wasm_v128_load32_lane(p + 1, v, 1);
  if (n > 2) v = wasm_v128_load32_lane(p + 2, v, 2);
  return (f4)v;
}

static inline void store_tail(float *p, f4 v, int n) {
  wasm_v128_store32_lane(p, (v128_t)v, 0);
  if (n > 1) wasm_v128_store32_lane(p + 1, (v128_t)v, 1);
  if (n > 2) wasm_v128_store32_lane(p + 2, (v128_t)v, 2);
}

// exp(x) for x <= 0: Cephes expf's range reduction (ln 2 split in two) and polynomial; x below
// -87 is clamped there (exp(-87) ~ 1.6e-38, the bottom of float32's normal range).
static inline f4 exp_nonpos(f4 x) {
  x = (f4)wasm_f32x4_max((v128_t)x, (v128_t)splat(-87.0f));
  f4 k = (f4)wasm_f32x4_nearest((v128_t)(x * splat(1.44269504088896341f)));
  f4 r = x - k * splat(0.693359375f);
  r = r - k * splat(-2.12194440e-4f);
  f4 p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  f4 y = p * (r * r) + r + splat(1.0f);
  i4 e = ((i4)wasm_i32x4_trunc_sat_f32x4((v128_t)k) + 127) << 23;
  return y * (f4)e;
}

static inline void gelu4(f4 x, f4 *y, f4 *d) {
  const f4 half = splat(0.5f);
  f4 ax = (f4)wasm_f32x4_abs((v128_t)x);
  f4 z = ax * splat(0.70710678118654752f);
  f4 t = splat(1.0f) / (splat(1.0f) + splat(0.3275911f) * z);
  f4 e = exp_nonpos(-(z * z));
  f4 poly = splat(1.061405429f);
  poly = poly * t + splat(-1.453152027f);
  poly = poly * t + splat(1.421413741f);
  poly = poly * t + splat(-0.284496736f);
  poly = poly * t + splat(0.254829592f);
  f4 erf_abs = splat(1.0f) - poly * t * e;
  // Phi(x) = (1 + erf(x / sqrt 2)) / 2 with erf odd: 1/2 +- erf(|x| / sqrt 2) / 2 by x's sign.
  f4 he = half * erf_abs;
  v128_t negative = wasm_f32x4_lt((v128_t)x, (v128_t)splat(0.0f));
  f4 phi = (f4)wasm_v128_bitselect((v128_t)(half - he), (v128_t)(half + he), negative);
  f4 pdf = e * splat(0.39894228040143268f);
  *y = x * phi;
  *d = phi + x * pdf;
}

EXPORT(gelu)
void gelu(const float *x, float *y, float *d, int n) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    f4 a, b;
    gelu4(vload(x + i), &a, &b);
    vstore(y + i, a);
    vstore(d + i, b);
  }
  if (i < n) {
    f4 a, b;
    gelu4(load_tail(x + i, n - i), &a, &b);
    store_tail(y + i, a, n - i);
    store_tail(d + i, b, n - i);
  }
}

// m1 = m*b1 + g*(1-b1); v1 = v*b2 + g^2*(1-b2); denom = sqrt(v1)/sqrt(bc2) + eps;
// p1 = p*decay - (m1/denom)*step_size, with decay = 1 - lr*wd and step_size = lr/bc1.
static inline void adam4(f4 p, f4 m, f4 v, f4 g, float b1, float c1, float b2, float c2, float sbc2,
                         float eps, float decay, float step, f4 *p1, f4 *m1, f4 *v1) {
  f4 mn = m * splat(b1) + g * splat(c1);
  f4 vn = v * splat(b2) + (g * g) * splat(c2);
  f4 denom = (f4)wasm_f32x4_sqrt((v128_t)vn) / splat(sbc2) + splat(eps);
  *p1 = p * splat(decay) - (mn / denom) * splat(step);
  *m1 = mn;
  *v1 = vn;
}

EXPORT(adamw)
void adamw(const float *p, const float *m, const float *v, const float *g, float *p1, float *m1, float *v1, int n,
           float b1, float c1, float b2, float c2, float sbc2, float eps, float decay, float step) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    f4 a, b, c;
    adam4(vload(p + i), vload(m + i), vload(v + i), vload(g + i), b1, c1, b2, c2, sbc2, eps, decay, step, &a, &b, &c);
    vstore(p1 + i, a);
    vstore(m1 + i, b);
    vstore(v1 + i, c);
  }
  if (i < n) {
    int r = n - i;
    f4 a, b, c;
    adam4(load_tail(p + i, r), load_tail(m + i, r), load_tail(v + i, r), load_tail(g + i, r), b1, c1, b2, c2, sbc2, eps, decay, step, &a, &b, &c);
    store_tail(p1 + i, a, r);
    store_tail(m1 + i, b, r);
    store_tail(v1 + i, c, r);
  }
}

// Lion: c = m*b1 + g*(1-b1); p1 = p*decay - lr*sign(c); m1 = m*b2 + g*(1-b2), as the tf-ops
// version (src/train/optim/lion.ts) computes it in float32; sign(0) = 0.
static inline void lion4(f4 p, f4 m, f4 g, float b1, float c1, float b2, float c2, float decay, float lr,
                         f4 *p1, f4 *m1) {
  f4 c = m * splat(b1) + g * splat(c1);
  v128_t pos = wasm_f32x4_gt((v128_t)c, (v128_t)splat(0.0f));
  v128_t neg = wasm_f32x4_lt((v128_t)c, (v128_t)splat(0.0f));
  f4 sign = (f4)wasm_v128_or(wasm_v128_and(pos, (v128_t)splat(1.0f)), wasm_v128_and(neg, (v128_t)splat(-1.0f)));
  *p1 = p * splat(decay) - sign * splat(lr);
  *m1 = m * splat(b2) + g * splat(c2);
}

EXPORT(lion)
void lion(const float *p, const float *m, const float *g, float *p1, float *m1, int n,
          float b1, float c1, float b2, float c2, float decay, float lr) {
  int i = 0;
  for (; i + 4 <= n; i += 4) {
    f4 a, b;
    lion4(vload(p + i), vload(m + i), vload(g + i), b1, c1, b2, c2, decay, lr, &a, &b);
    vstore(p1 + i, a);
    vstore(m1 + i, b);
  }
  if (i < n) {
    int r = n - i;
    f4 a, b;
    lion4(load_tail(p + i, r), load_tail(m + i, r), load_tail(g + i, r), b1, c1, b2, c2, decay, lr, &a, &b);
    store_tail(p1 + i, a, r);
    store_tail(m1 + i, b, r);
  }
}
