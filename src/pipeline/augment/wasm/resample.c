// WebAssembly SIMD (simd128, f32x4) version of Resampler.run (../resample.ts) and AxisTable
// (../../image/axis-table.ts): crop box -> separable res x res resample (area weights when shrinking,
// 2-tap bilinear when enlarging), optional horizontal flip, then either per-channel v * scale + bias
// as float32 planar C,H,W, or (no normalisation given) the values rounded (ties to even) and
// clamped to uint8 C,H,W: uint8 frames, whose consumer normalises on its device.
//
// README
//   Build (Debian bookworm: apt-get install -y clang lld; clang 14 is enough):
//     sh src/pipeline/augment/wasm/build.sh
//   which runs
//     clang --target=wasm32 -O3 -msimd128 -mbulk-memory -ffp-contract=off -nostdlib \
//       -Wl,--no-entry -Wl,--stack-first -Wl,-z,stack-size=65536 \
//       -Wl,--export=__heap_base -Wl,--initial-memory=1048576 \
//       -o src/pipeline/augment/wasm/resample.wasm src/pipeline/augment/wasm/resample.c
//   The .wasm is committed; nothing compiles it at npm ci or run time. resample-wasm.ts loads it
//   synchronously and owns the linear memory layout (this file only sees pointers).
//
// Numerics: the axis tables are computed in double exactly as AxisTable does (same operations in
// the same order, stored to float32), so start/count/weights are bit-identical to the JS ones.
// The passes use float32 arithmetic, and Resampler repeats each operation in the same order, so
// both give the same bits for both output types.
//
// Horizontal pass (first, on uint8 source rows): output columns go in groups of four (one f32x4).
// For a group whose four source spans fit in one 16-byte window (always true when enlarging, and
// for mild shrinking), one unaligned v128.load per tap plus an i8x16.swizzle per channel gathers
// the four pixels' bytes straight into zero-extended i32 lanes; wider groups (strong shrinking)
// gather lane by lane. Flip is folded into the per-group tables. The vertical pass then runs on
// planar float rows, fully contiguous, with the normalisation folded in as Resampler does.
#include <stdint.h>
#include <wasm_simd128.h>

#define EPS 1e-6
#define ALIGN16(n) (((n) + 15) & ~15)

typedef struct {
  int32_t *start;
  int32_t *count;
  float *w;
  int stride, lo, hi, two;
} Axis;

static inline double dmax(double a, double b) { return a > b ? a : b; }
static inline double dmin(double a, double b) { return a < b ? a : b; }

static int axis_stride(int out, double len) {
  return len >= out ? (int)__builtin_ceil(len / out) + 1 : 2;
}

// AxisTable.fillArea, operation for operation.
static void fill_area(Axis *t, int out, int inSize, double c0, double len) {
  const int stride = t->stride;
  for (int i = 0; i < out; i++) {
    double a = dmax(0, c0 + ((double)i * len) / out);
    double b = dmin(inSize, c0 + ((double)(i + 1) * len) / out);
    double j0 = __builtin_floor(a);
    double j1 = dmin(inSize, __builtin_ceil(b));
    if (j1 - j0 > 1 && dmin(b, j0 + 1) - a < EPS) j0++;
    if (j1 - j0 > 1 && b - dmax(a, j1 - 1) < EPS) j1--;
    if (j1 - j0 > stride) j1 = j0 + stride;
    float *w = t->w + i * stride;
    int n = (int)(j1 - j0);
    double sum = 0;
    for (int k = 0; k < n; k++) {
      double j = j0 + k;
      double v = dmax(0, dmin(b, j + 1) - dmax(a, j));
      w[k] = (float)v;
      sum += v;
    }
    double inv = sum > 0 ? 1 / sum : 0;
    for (int k = 0; k < n; k++) w[k] = (float)((double)w[k] * inv);
    for (int k = n < 0 ? 0 : n; k < stride; k++) w[k] = 0;
    t->start[i] = (int32_t)j0;
    t->count[i] = n;
  }
}

// AxisTable.fillBilinear.
static void fill_bilinear(Axis *t, int out, int inSize, double c0, double len) {
  double scale = len / out;
  for (int i = 0; i < out; i++) {
    double centre = c0 + ((double)i + 0.5) * scale;
    double j = __builtin_floor(centre - 0.5);
    double frac = centre - 0.5 - j;
    if (j < 0) {
      j = 0;
      frac = 0;
    }
    if (j >= inSize - 1) {
      j = dmax(0, inSize - 2);
      frac = inSize > 1 ? 1 : 0;
    }
    t->start[i] = (int32_t)j;
    t->count[i] = inSize > 1 ? 2 : 1;
    t->w[i * 2] = (float)(1 - frac);
    t->w[i * 2 + 1] = inSize > 1 ? (float)frac : 0;
  }
}

static void fill(Axis *t, int out, int inSize, double c0, double len) {
  if (len >= out) fill_area(t, out, inSize, c0, len);
  else fill_bilinear(t, out, inSize, c0, len);
  int lo = inSize, hi = 0, two = 1;
  for (int i = 0; i < out; i++) {
    int s = t->start[i];
    int e = s + t->count[i];
    if (s < lo) lo = s;
    if (e > hi) hi = e;
    if (t->count[i] != 2) two = 0;
  }
  t->lo = lo;
  t->hi = hi;
  t->two = two && t->stride == 2;
}

// Per group of four output columns: [base:i32, fits:i32, pad:8][lane byte offsets: i32x4]
// [swizzle mask per channel: C x v128][weights per tap: stride x f32x4].
#define REC_HEAD 32

// Group outer, rows inner: the group's masks and weights stay in registers across rows.
static inline __attribute__((always_inline)) void hpass(const int C, const int K, const uint8_t *src, int rowBytes, int rows,
                                                        const uint8_t *groups, int G, int recSize, int taps, float *tmp,
                                                        int resP, int plane) {
  if (K) taps = K;
  for (int g = 0; g < G; g++) {
    const uint8_t *rec = groups + g * recSize;
    const int32_t *head = (const int32_t *)rec;
    const v128_t *wk = (const v128_t *)(rec + REC_HEAD + 16 * C);
    float *t = tmp + 4 * g;
    if (head[1]) {
      const v128_t *mp = (const v128_t *)(rec + REC_HEAD);
      v128_t masks[4];
      for (int c = 0; c < C; c++) masks[c] = mp[c];
      const uint8_t *p = src + head[0];
      if (K == 2) {
        const v128_t w0 = wk[0], w1 = wk[1];
        for (int r = 0; r < rows; r++, p += rowBytes, t += resP) {
          v128_t L0 = wasm_v128_load(p);
          v128_t L1 = wasm_v128_load(p + C);
          for (int c = 0; c < C; c++) {
            v128_t a = wasm_f32x4_mul(wasm_f32x4_convert_i32x4(wasm_i8x16_swizzle(L0, masks[c])), w0);
            v128_t b = wasm_f32x4_mul(wasm_f32x4_convert_i32x4(wasm_i8x16_swizzle(L1, masks[c])), w1);
            wasm_v128_store(t + c * plane, wasm_f32x4_add(a, b));
          }
        }
      } else {
        for (int r = 0; r < rows; r++, p += rowBytes, t += resP) {
          v128_t acc[4];
          v128_t L = wasm_v128_load(p);
          for (int c = 0; c < C; c++) acc[c] = wasm_f32x4_mul(wasm_f32x4_convert_i32x4(wasm_i8x16_swizzle(L, masks[c])), wk[0]);
          for (int k = 1; k < taps; k++) {
            L = wasm_v128_load(p + k * C);
            for (int c = 0; c < C; c++)
              acc[c] = wasm_f32x4_add(acc[c], wasm_f32x4_mul(wasm_f32x4_convert_i32x4(wasm_i8x16_swizzle(L, masks[c])), wk[k]));
          }
          for (int c = 0; c < C; c++) wasm_v128_store(t + c * plane, acc[c]);
        }
      }
    } else {
      const int32_t *offs = (const int32_t *)(rec + 16);
      const uint8_t *q0 = src + offs[0], *q1 = src + offs[1], *q2 = src + offs[2], *q3 = src + offs[3];
      for (int r = 0; r < rows; r++, t += resP) {
        const int ro = r * rowBytes;
        v128_t acc[4];
        for (int c = 0; c < C; c++) acc[c] = wasm_f32x4_splat(0);
        for (int k = 0; k < taps; k++) {
          v128_t w = wk[k];
          int o = ro + k * C;
          for (int c = 0; c < C; c++) {
            v128_t v = wasm_i32x4_make(q0[o + c], q1[o + c], q2[o + c], q3[o + c]);
            acc[c] = wasm_f32x4_add(acc[c], wasm_f32x4_mul(wasm_f32x4_convert_i32x4(v), w));
          }
        }
        for (int c = 0; c < C; c++) wasm_v128_store(t + c * plane, acc[c]);
      }
    }
  }
}

// Float32 -> int32, rounded to nearest, ties to even (IEEE's default rounding, numpy's rint):
// adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits for |v| < 2^22, and an
// integer subtraction of the constant's bit pattern reads it out. Exact for every value a
// resampled byte can take (byte x weights summing to 1, a few hundred at most); NaN cannot occur.
// Two instructions instead of f32x4.nearest + i32x4.trunc_sat_f32x4, which lower to a long
// sequence on x86 (measured by the loader-stages bench: uint8 kernel 8.4-8.7 -> 7.3-7.5 CPU
// us/image).
static inline v128_t round_i32x4(v128_t v) {
  const v128_t magic = wasm_f32x4_splat(12582912.0f);
  return wasm_i32x4_sub(wasm_f32x4_add(v, magic), magic);
}

// Four float32 values -> four bytes: rounded as above, then saturated to 0..255 through the
// narrowing conversions. The TypeScript reference (a Uint8ClampedArray store in resample.ts)
// rounds and clamps exactly the same way.
static inline void store_u8x4(uint8_t *o, v128_t v) {
  v128_t i = round_i32x4(v);
  v128_t s = wasm_i16x8_narrow_i32x4(i, i);
  wasm_v128_store32_lane(o, wasm_u8x16_narrow_i16x8(s, s), 0);
}

// Sixteen at once: the same rounding, one store.
static inline void store_u8x16(uint8_t *o, v128_t a, v128_t b, v128_t c, v128_t d) {
  v128_t ab = wasm_i16x8_narrow_i32x4(round_i32x4(a), round_i32x4(b));
  v128_t cd = wasm_i16x8_narrow_i32x4(round_i32x4(c), round_i32x4(d));
  wasm_v128_store(o, wasm_u8x16_narrow_i16x8(ab, cd));
}

static inline __attribute__((always_inline)) int run_impl(int res, int C, const uint8_t *src, int W, int H, int r0, int r1,
                                                          double bx, double by, double bw, double bh, int flip, const float *norm,
                                                          void *outp, uint8_t *scratch, int scratchCap, const int u8);

/**
 * One image. `src` points at row r0 of the HWC uint8 image (rows r0..r1 are present, followed by
 * at least (stride + 2) * C + 32 readable bytes). With norm = scale[C], bias[C]: writes C*res*res
 * normalised floats to `out` (plus up to 3 floats of slack after them); with norm = 0 (NULL):
 * C*res*res uint8 pixels (plus up to 3 bytes of slack), the resampled values rounded and clamped.
 * Returns 0 when done; > 0: scratch needs that many bytes (nothing written); -1: the rows read
 * fall outside [r0, r1); -2: the crop reads outside the image.
 */
__attribute__((export_name("resample"))) int resample(int res, int C, const uint8_t *src, int W, int H, int r0, int r1,
                                                      double bx, double by, double bw, double bh, int flip, const float *norm,
                                                      void *out, uint8_t *scratch, int scratchCap) {
  // Two inlined copies, each with its output stage fixed at compile time.
  if (norm) return run_impl(res, C, src, W, H, r0, r1, bx, by, bw, bh, flip, norm, out, scratch, scratchCap, 0);
  return run_impl(res, C, src, W, H, r0, r1, bx, by, bw, bh, flip, 0, out, scratch, scratchCap, 1);
}

static inline __attribute__((always_inline)) int run_impl(int res, int C, const uint8_t *src, int W, int H, int r0, int r1,
                                                          double bx, double by, double bw, double bh, int flip, const float *norm,
                                                          void *outp, uint8_t *scratch, int scratchCap, const int u8) {
  const int G = (res + 3) / 4;
  const int resP = 4 * G;
  const int sx = axis_stride(res, bw);
  const int sy = axis_stride(res, bh);
  const int recSize = REC_HEAD + 16 * C + 16 * sx;
  const int tables = 4 * ALIGN16(res * 4) + ALIGN16(res * sx * 4) + ALIGN16(res * sy * 4) + G * recSize;
  if (tables + C * (r1 - r0) * resP * 4 > scratchCap) return tables + C * (r1 - r0 + 1) * resP * 4;

  uint8_t *p = scratch;
  Axis xs, ys;
  xs.start = (int32_t *)p; p += ALIGN16(res * 4);
  xs.count = (int32_t *)p; p += ALIGN16(res * 4);
  xs.w = (float *)p; p += ALIGN16(res * sx * 4);
  ys.start = (int32_t *)p; p += ALIGN16(res * 4);
  ys.count = (int32_t *)p; p += ALIGN16(res * 4);
  ys.w = (float *)p; p += ALIGN16(res * sy * 4);
  uint8_t *groups = p; p += G * recSize;
  float *tmp = (float *)p;
  xs.stride = sx;
  ys.stride = sy;
  fill(&xs, res, W, bx, bw);
  fill(&ys, res, H, by, bh);
  // AxisTable never produces taps outside [0, inSize); checked anyway since a wasm read past the
  // copied rows would be garbage (or a trap) rather than JS's undefined.
  for (int i = 0; i < res; i++) {
    if (xs.count[i] > 0 && (xs.start[i] < 0 || xs.start[i] + xs.count[i] > W)) return -2;
    if (ys.count[i] > 0 && (ys.start[i] < 0 || ys.start[i] + ys.count[i] > H)) return -2;
  }
  if (ys.lo < r0 || ys.hi > r1) return -1;
  const int rows = ys.hi - ys.lo;
  const int plane = rows * resP;

  // Group tables for the horizontal pass (flip folded in).
  int allFit = 1;
  for (int g = 0; g < G; g++) {
    uint8_t *rec = groups + g * recSize;
    int j[4], s[4];
    int mn = 0x7fffffff, mx = -0x7fffffff;
    for (int i = 0; i < 4; i++) {
      int x = 4 * g + i;
      j[i] = x < res ? (flip ? res - 1 - x : x) : -1;
      // Lanes past res, and columns with no taps (a box beyond the image edge), read nothing.
      if (j[i] >= 0 && xs.count[j[i]] <= 0) j[i] = -1;
      if (j[i] >= 0) {
        s[i] = xs.start[j[i]];
        if (s[i] < mn) mn = s[i];
        if (s[i] > mx) mx = s[i];
      }
    }
    if (mn > mx) mn = mx = 0;
    for (int i = 0; i < 4; i++)
      if (j[i] < 0) s[i] = mn;
    int fits = (mx - mn) * C + C - 1 <= 15;
    allFit &= fits;
    int32_t *head = (int32_t *)rec;
    head[0] = mn * C;
    head[1] = fits;
    head[2] = head[3] = 0;
    int32_t *offs = (int32_t *)(rec + 16);
    for (int i = 0; i < 4; i++) offs[i] = s[i] * C;
    uint8_t *m = rec + REC_HEAD;
    for (int c = 0; c < C; c++)
      for (int i = 0; i < 4; i++) {
        m[16 * c + 4 * i] = fits ? (uint8_t)((s[i] - mn) * C + c) : 0x80;
        m[16 * c + 4 * i + 1] = m[16 * c + 4 * i + 2] = m[16 * c + 4 * i + 3] = 0x80;
      }
    float *w = (float *)(rec + REC_HEAD + 16 * C);
    for (int k = 0; k < sx; k++)
      for (int i = 0; i < 4; i++) w[4 * k + i] = j[i] >= 0 && k < xs.count[j[i]] ? xs.w[j[i] * sx + k] : 0;
  }
  (void)allFit;

  const int rowBytes = W * C;
  const uint8_t *s0 = src + (ys.lo - r0) * rowBytes;
  const int two = sx == 2;
#define HP(CC, KK) hpass(CC, KK, s0, rowBytes, rows, groups, G, recSize, sx, tmp, resP, plane)
  switch (C * 2 + two) {
    case 3: HP(1, 2); break;
    case 2: HP(1, 0); break;
    case 5: HP(2, 2); break;
    case 4: HP(2, 0); break;
    case 7: HP(3, 2); break;
    case 6: HP(3, 0); break;
    case 9: HP(4, 2); break;
    case 8: HP(4, 0); break;
    default: return -3;
  }
#undef HP

  const int resSq = res * res;
  if (u8) {
    // Vertical pass without normalisation: the normalised pass's float32 operations with scale 1
    // and bias 0, then rounded to bytes.
    for (int c = 0; c < C; c++) {
      const float *tb = tmp + c * plane;
      uint8_t *ob = (uint8_t *)outp + c * resSq;
      for (int y = 0; y < res; y++) {
        const float *a = tb + (ys.start[y] - ys.lo) * resP;
        uint8_t *o = ob + y * res;
        if (ys.two) {
          const v128_t w0 = wasm_f32x4_splat(ys.w[2 * y]);
          const v128_t w1 = wasm_f32x4_splat(ys.w[2 * y + 1]);
          const float *b = a + resP;
#define V2(g) wasm_f32x4_add(wasm_f32x4_mul(w0, wasm_v128_load(a + 4 * (g))), wasm_f32x4_mul(w1, wasm_v128_load(b + 4 * (g))))
          int g = 0;
          for (; g + 4 <= G; g += 4) store_u8x16(o + 4 * g, V2(g), V2(g + 1), V2(g + 2), V2(g + 3));
          for (; g < G; g++) store_u8x4(o + 4 * g, V2(g));
#undef V2
        } else {
          const int n = ys.count[y];
          const float *wy = ys.w + y * sy;
          for (int g = 0; g < G; g++) {
            v128_t acc = wasm_f32x4_splat(0);
            for (int k = 0; k < n; k++)
              acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_splat(wy[k]), wasm_v128_load(a + k * resP + 4 * g)));
            store_u8x4(o + 4 * g, acc);
          }
        }
      }
    }
    return 0;
  }

  // Vertical pass, normalised on the way out (two taps: scale folded into the weights, as JS).
  float *out = (float *)outp;
  for (int c = 0; c < C; c++) {
    const float sc = norm[c];
    const v128_t vb = wasm_f32x4_splat(norm[C + c]);
    const float *tb = tmp + c * plane;
    float *ob = out + c * resSq;
    for (int y = 0; y < res; y++) {
      const float *a = tb + (ys.start[y] - ys.lo) * resP;
      float *o = ob + y * res;
      if (ys.two) {
        const v128_t w0 = wasm_f32x4_splat((float)((double)ys.w[2 * y] * sc));
        const v128_t w1 = wasm_f32x4_splat((float)((double)ys.w[2 * y + 1] * sc));
        const float *b = a + resP;
        for (int g = 0; g < G; g++) {
          v128_t v = wasm_f32x4_add(wasm_f32x4_mul(w0, wasm_v128_load(a + 4 * g)), wasm_f32x4_mul(w1, wasm_v128_load(b + 4 * g)));
          wasm_v128_store(o + 4 * g, wasm_f32x4_add(v, vb));
        }
      } else {
        const int n = ys.count[y];
        const float *wy = ys.w + y * sy;
        const v128_t vs = wasm_f32x4_splat(sc);
        for (int g = 0; g < G; g++) {
          v128_t acc = wasm_f32x4_splat(0);
          for (int k = 0; k < n; k++)
            acc = wasm_f32x4_add(acc, wasm_f32x4_mul(wasm_f32x4_splat(wy[k]), wasm_v128_load(a + k * resP + 4 * g)));
          wasm_v128_store(o + 4 * g, wasm_f32x4_add(wasm_f32x4_mul(acc, vs), vb));
        }
      }
    }
  }
  return 0;
}
