// WebAssembly SIMD (simd128) version of Resampler.run (../resample.ts) and AxisTable
// (../../image/axis-table.ts): crop box -> separable res x res resample (area weights when shrinking,
// 2-tap bilinear when enlarging), optional horizontal flip, then either per-channel v * scale + bias
// as float32 planar C,H,W (in float32), or (no normalisation given) uint8 C,H,W pixels resampled in
// 16-bit fixed point (run_u8, at the end): uint8 frames, whose consumer normalises on its device.
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
// The float32 passes use float32 arithmetic, and Resampler repeats each operation in the same
// order; the uint8 passes use integers, which Resampler repeats too. Both give the same bits.
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
  /** uint8 kernel: the weights in Q14 (quantise). */
  int16_t *q;
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

// ---- Table cache (uint8 kernel) ----
// An image's axis tables and the horizontal pass's group records depend only on the crop's
// position and size on each axis (and the image's size, res, channels, flip), not on its pixels.
// Random-resized crops of same-sized images repeat them: a 64x64 source has ~1,200 (x, width)
// pairs. Building them, Q14 weights included, was a third of the uint8 kernel's time (bench
// augment, rgb64x64: 2.1 of 6.3 us an image), so two-tap tables (crops no larger than res, the
// loader's case) are kept in a caller-given region: two-way set-associative, keyed on every input
// they depend on. A hit gives the bytes a rebuild would give (the same code built them), so
// results never depend on what the cache holds. The float32 kernel builds its tables every time:
// the cache made it no faster (1.00-1.03x its time in paired runs), its tables being cheaper and
// its passes' memory traffic larger.
typedef struct {
  double c0, len;
  int32_t in, res, C, flip, kind, valid, pad[2];
} Key;
#define KEY_BYTES 48
#define Y_HEAD (KEY_BYTES + 16)

typedef struct {
  uint8_t *base;
  int sets, esize;
} Region;

static inline int key_eq(const Key *a, const Key *b) {
  return a->c0 == b->c0 && a->len == b->len && a->in == b->in && a->res == b->res && a->C == b->C && a->flip == b->flip &&
         a->kind == b->kind && b->valid;
}

static uint32_t key_hash(const Key *k) {
  const uint32_t *w = (const uint32_t *)k;
  uint32_t h = 2166136261u;
  for (int i = 0; i < 9; i++) h = (h ^ w[i]) * 16777619u;
  return h ^ (h >> 15);
}

// The entry for `k`: *hit = 1 when it holds k's tables; else the way to rebuild, its key already
// written and marked invalid until the caller sets valid once it is complete.
static uint8_t *lookup(const Region *r, const Key *k, int *hit) {
  const uint32_t h = key_hash(k);
  uint8_t *set = r->base + (uint32_t)(h % (uint32_t)r->sets) * 2 * r->esize;
  for (int way = 0; way < 2; way++) {
    uint8_t *e = set + way * r->esize;
    if (key_eq(k, (const Key *)e)) {
      *hit = 1;
      return e;
    }
  }
  uint8_t *e = set + ((h >> 20) & 1) * r->esize;
  Key *ek = (Key *)e;
  *ek = *k;
  ek->valid = 0;
  *hit = 0;
  return e;
}

// Region sizes for this call's res and channels: a quarter of the bytes for y tables, the rest
// for x group records. 0 when there is no room (or no region): every call builds its tables.
static int cache_layout(Region *y, Region *x, uint8_t *mem, int cap, int res, int C, int recSize) {
  y->esize = Y_HEAD + 3 * ALIGN16(res * 4) + ALIGN16(res * 8);
  x->esize = KEY_BYTES + ((res + 3) / 4) * recSize;
  y->sets = cap / 4 / (2 * y->esize);
  x->sets = (cap - y->sets * 2 * y->esize) / (2 * x->esize);
  if (!mem || y->sets < 1 || x->sets < 1) return 0;
  y->base = mem;
  x->base = mem + y->sets * 2 * y->esize;
  return 1;
}

static int axis_ok(const Axis *t, int out, int inSize) {
  // AxisTable never produces taps outside [0, inSize); checked anyway since a wasm read past the
  // copied rows would be garbage (or a trap) rather than JS's undefined.
  for (int i = 0; i < out; i++)
    if (t->count[i] > 0 && (t->start[i] < 0 || t->start[i] + t->count[i] > inSize)) return 0;
  return 1;
}

static void quantise(const float *w, int n, int16_t *q, int stride);

// The vertical axis's table: from the cache (two-tap tables) or built into ys's own arrays, its
// Q14 weights (ys->q) too where `wantQ` (the uint8 kernel, the only one that passes a cache).
static int y_table(Axis *ys, const Region *cache, int res, int H, double by, double bh, int sy, int wantQ) {
  uint8_t *e = 0;
  if (cache && sy == 2) {
    const Key k = {by, bh, H, res, 0, 0, 0, 1, {0, 0}};
    int hit;
    e = lookup(cache, &k, &hit);
    const int32_t *head = (const int32_t *)(e + KEY_BYTES);
    ys->start = (int32_t *)(e + Y_HEAD);
    ys->count = ys->start + ALIGN16(res * 4) / 4;
    ys->w = (float *)(ys->count + ALIGN16(res * 4) / 4);
    ys->q = (int16_t *)(ys->w + ALIGN16(res * 8) / 4);
    ys->stride = 2;
    if (hit) {
      ys->lo = head[0];
      ys->hi = head[1];
      ys->two = head[2];
      return 1;
    }
  }
  fill(ys, res, H, by, bh);
  if (!axis_ok(ys, res, H)) return 0;
  if (wantQ)
    for (int y = 0; y < res; y++) quantise(ys->w + y * sy, ys->count[y], ys->q + y * sy, sy);
  if (e) {
    int32_t *head = (int32_t *)(e + KEY_BYTES);
    head[0] = ys->lo;
    head[1] = ys->hi;
    head[2] = ys->two;
    ((Key *)e)->valid = 1;
  }
  return 1;
}

// Group g's lanes (output columns 4g..4g+3, flip folded in): j[i] the table column a lane takes
// (-1: past res, or no taps where a box hangs off the image: it reads nothing), s[i] its first
// source pixel (the group's lowest, *mn, for lanes that read nothing); and the record's head
// ([base = mn * C, fits]) and lane byte offsets. Returns fits: every lane's bytes, `span` past
// its first, lie in one 16-byte window from the lowest.
static int group_head(const Axis *xs, int res, int C, int flip, int g, int span, uint8_t *rec, int j[4], int s[4], int *mn) {
  int lo = 0x7fffffff, hi = -0x7fffffff;
  for (int i = 0; i < 4; i++) {
    int x = 4 * g + i;
    j[i] = x < res ? (flip ? res - 1 - x : x) : -1;
    if (j[i] >= 0 && xs->count[j[i]] <= 0) j[i] = -1;
    if (j[i] >= 0) {
      s[i] = xs->start[j[i]];
      if (s[i] < lo) lo = s[i];
      if (s[i] > hi) hi = s[i];
    }
  }
  if (lo > hi) lo = hi = 0;
  for (int i = 0; i < 4; i++)
    if (j[i] < 0) s[i] = lo;
  const int fits = (hi - lo) * C + span <= 15;
  int32_t *head = (int32_t *)rec;
  head[0] = lo * C;
  head[1] = fits;
  head[2] = head[3] = 0;
  int32_t *offs = (int32_t *)(rec + 16);
  for (int i = 0; i < 4; i++) offs[i] = s[i] * C;
  *mn = lo;
  return fits;
}

// Group tables for the horizontal pass (flip folded in), float32 kernel layout.
static void build_groups(const Axis *xs, int res, int C, int flip, int sx, uint8_t *groups, int recSize) {
  const int G = (res + 3) / 4;
  for (int g = 0; g < G; g++) {
    uint8_t *rec = groups + g * recSize;
    int j[4], s[4], mn;
    const int fits = group_head(xs, res, C, flip, g, C - 1, rec, j, s, &mn);
    uint8_t *m = rec + REC_HEAD;
    for (int c = 0; c < C; c++)
      for (int i = 0; i < 4; i++) {
        m[16 * c + 4 * i] = fits ? (uint8_t)((s[i] - mn) * C + c) : 0x80;
        m[16 * c + 4 * i + 1] = m[16 * c + 4 * i + 2] = m[16 * c + 4 * i + 3] = 0x80;
      }
    float *w = (float *)(rec + REC_HEAD + 16 * C);
    for (int k = 0; k < sx; k++)
      for (int i = 0; i < 4; i++) w[4 * k + i] = j[i] >= 0 && k < xs->count[j[i]] ? xs->w[j[i] * sx + k] : 0;
  }
}

static void build_groups_u8(const Axis *xs, int res, int C, int flip, int sx, uint8_t *groups, int recSize);

// The horizontal pass's group records (kind 1: float32 kernel's, 2: uint8 kernel's): from the
// cache (two-tap tables) or built into `own` (xs: scratch for the axis table).
static const uint8_t *x_groups(Axis *xs, const Region *cache, int kind, int res, int C, int W, double bx, double bw, int flip,
                               int sx, int recSize, uint8_t *own) {
  uint8_t *e = 0;
  if (cache && sx == 2) {
    const Key k = {bx, bw, W, res, C, flip, kind, 1, {0, 0}};
    int hit;
    e = lookup(cache, &k, &hit);
    if (hit) return e + KEY_BYTES;
    own = e + KEY_BYTES;
  }
  fill(xs, res, W, bx, bw);
  if (!axis_ok(xs, res, W)) return 0;
  if (kind == 1) build_groups(xs, res, C, flip, sx, own, recSize);
  else build_groups_u8(xs, res, C, flip, sx, own, recSize);
  if (e) ((Key *)e)->valid = 1;
  return own;
}

// Scratch for the axis tables (and, withQ, the vertical Q14 weights): its size, and carving it
// from p (returns what follows).
static int axes_bytes(int res, int sx, int sy, int withQ) {
  return 4 * ALIGN16(res * 4) + ALIGN16(res * sx * 4) + ALIGN16(res * sy * 4) + (withQ ? ALIGN16(res * sy * 2) : 0);
}

static uint8_t *carve_axes(Axis *xs, Axis *ys, uint8_t *p, int res, int sx, int sy, int withQ) {
  xs->start = (int32_t *)p; p += ALIGN16(res * 4);
  xs->count = (int32_t *)p; p += ALIGN16(res * 4);
  xs->w = (float *)p; p += ALIGN16(res * sx * 4);
  ys->start = (int32_t *)p; p += ALIGN16(res * 4);
  ys->count = (int32_t *)p; p += ALIGN16(res * 4);
  ys->w = (float *)p; p += ALIGN16(res * sy * 4);
  if (withQ) {
    ys->q = (int16_t *)p; p += ALIGN16(res * sy * 2);
  }
  xs->stride = sx;
  ys->stride = sy;
  return p;
}

static inline __attribute__((always_inline)) int run_impl(int res, int C, const uint8_t *src, int W, int H, int r0, int r1,
                                                          double bx, double by, double bw, double bh, int flip, const float *norm,
                                                          float *out, uint8_t *scratch, int scratchCap);
static int run_u8(int res, int C, const uint8_t *src, int W, int H, int r0, int r1, double bx, double by, double bw, double bh,
                  int flip, uint8_t *out, uint8_t *scratch, int scratchCap, uint8_t *cacheMem, int cacheCap);

/**
 * One image. `src` points at row r0 of the HWC uint8 image (rows r0..r1 are present, followed by
 * at least (stride + 2) * C + 32 readable bytes). With norm = scale[C], bias[C]: writes C*res*res
 * normalised floats to `out` (plus up to 3 floats of slack after them); with norm = 0 (NULL):
 * C*res*res uint8 pixels (plus up to 3 bytes of slack), resampled in fixed point (run_u8).
 * `cache` (cacheCap bytes, zeroed before first use, kept between calls; 0: none) holds the uint8
 * kernel's two-tap tables across calls. Returns 0 when done; > 0: scratch needs that many bytes (nothing
 * written); -1: the rows read fall outside [r0, r1); -2: the crop reads outside the image.
 */
__attribute__((export_name("resample"))) int resample(int res, int C, const uint8_t *src, int W, int H, int r0, int r1,
                                                      double bx, double by, double bw, double bh, int flip, const float *norm,
                                                      void *out, uint8_t *scratch, int scratchCap, uint8_t *cache, int cacheCap) {
  if (norm) return run_impl(res, C, src, W, H, r0, r1, bx, by, bw, bh, flip, norm, (float *)out, scratch, scratchCap);
  return run_u8(res, C, src, W, H, r0, r1, bx, by, bw, bh, flip, (uint8_t *)out, scratch, scratchCap, cache, cacheCap);
}

static inline __attribute__((always_inline)) int run_impl(int res, int C, const uint8_t *src, int W, int H, int r0, int r1,
                                                          double bx, double by, double bw, double bh, int flip, const float *norm,
                                                          float *out, uint8_t *scratch, int scratchCap) {
  const int G = (res + 3) / 4;
  const int resP = 4 * G;
  const int sx = axis_stride(res, bw);
  const int sy = axis_stride(res, bh);
  const int recSize = REC_HEAD + 16 * C + 16 * sx;
  const int tables = axes_bytes(res, sx, sy, 0) + G * recSize;
  if (tables + C * (r1 - r0) * resP * 4 > scratchCap) return tables + C * (r1 - r0 + 1) * resP * 4;

  Axis xs, ys;
  uint8_t *own = carve_axes(&xs, &ys, scratch, res, sx, sy, 0);
  float *tmp = (float *)(own + G * recSize);
  // No table cache here (see Table cache).
  if (!y_table(&ys, 0, res, H, by, bh, sy, 0)) return -2;
  const uint8_t *groups = x_groups(&xs, 0, 1, res, C, W, bx, bw, flip, sx, recSize, own);
  if (!groups) return -2;
  if (ys.lo < r0 || ys.hi > r1) return -1;
  const int rows = ys.hi - ys.lo;
  const int plane = rows * resP;

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
  // Vertical pass, normalised on the way out (two taps: scale folded into the weights, as JS).
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

// ---- uint8 frames: 16-bit fixed point ----
// The uint8 kernel resamples in integers, as Pillow and OpenCV do for 8-bit images: each output's
// float32 weights (the same tables as the float32 kernel) become Q14 integers summing to exactly
// 16384 (quantise), so a flat image stays flat. Horizontal: acc = sum(pixel * q), kept as
// t = (acc + 8256) >> 7: Q7, rounded to nearest, plus 64 (half a pixel) that the vertical pass
// carries through its weights (which sum to one) into its final shift. Vertical:
// out = sum(t * q) >> 21, the Q7 value rounded half up to a whole pixel. t <= 32704 and out <= 255
// by construction: nothing saturates or overflows. i32x4.dot_i16x8_s does two taps of four outputs
// in one instruction on both passes. Against the float32 passes rounded to bytes (the previous
// uint8 kernel) it is ~10% faster (bench augment, rgb64x64: 7.07 -> 6.33 us an image; with the
// table cache, 0.78-0.82x the time in paired runs). The price: a pixel differs from the exactly
// rounded resample by one where the exact value lies within a few hundredths of a half; it is at
// most 0.5 + 1/256 + (taps - 1) * 255/32768 per axis steps from the unrounded value (0.52 for
// two-tap crops; test/helpers/uint8-bound.ts).
#define QW 14
#define H_BIAS 8256

// Q14 weights of one output from its float32 weights: cumulative rounding, the last one takes
// the rest. Double operations in this order; the TypeScript reference repeats them.
static void quantise(const float *w, int n, int16_t *q, int stride) {
  double cum = 0;
  int prev = 0;
  for (int k = 0; k < n; k++) {
    cum += (double)w[k];
    int qc = k == n - 1 ? 1 << QW : (int)__builtin_floor(cum * (1 << QW) + 0.5);
    q[k] = (int16_t)(qc - prev);
    prev = qc;
  }
  for (int k = n < 0 ? 0 : n; k < stride; k++) q[k] = 0;
}

// Per group of four output columns: [base:i32, fits:i32, pad:8][lane byte offsets: i32x4]
// [dot mask per channel: C x v128][Q14 weight pairs: P x (4 lanes of (q[2p], q[2p+1]))], P = ceil(sx / 2).
// A mask puts tap 2p of lane i in i16 lane 2i and tap 2p + 1 in lane 2i + 1, zero-extended, from
// a 16-byte window at base + 2p * C.
static void build_groups_u8(const Axis *xs, int res, int C, int flip, int sx, uint8_t *groups, int recSize) {
  const int G = (res + 3) / 4;
  const int P = (sx + 1) / 2;
  int16_t xq[sx];
  for (int g = 0; g < G; g++) {
    uint8_t *rec = groups + g * recSize;
    int j[4], s[4], mn;
    // A lane reads a tap pair: 2 * C - 1 bytes past its first.
    const int fits = group_head(xs, res, C, flip, g, 2 * C - 1, rec, j, s, &mn);
    uint8_t *m = rec + REC_HEAD;
    for (int c = 0; c < C; c++)
      for (int i = 0; i < 4; i++) {
        uint8_t *b = m + 16 * c + 4 * i;
        b[0] = fits ? (uint8_t)((s[i] - mn) * C + c) : 0x80;
        b[2] = fits ? (uint8_t)((s[i] - mn) * C + C + c) : 0x80;
        b[1] = b[3] = 0x80;
      }
    int16_t *w = (int16_t *)(rec + REC_HEAD + 16 * C);
    for (int i = 0; i < 4; i++) {
      if (j[i] >= 0) quantise(xs->w + j[i] * sx, xs->count[j[i]], xq, sx);
      for (int k = 0; k < 2 * P; k++) w[(k >> 1) * 8 + 2 * i + (k & 1)] = j[i] >= 0 && k < sx ? xq[k] : 0;
    }
  }
}

static inline v128_t h_round(v128_t acc) { return wasm_i32x4_shr(wasm_i32x4_add(acc, wasm_i32x4_splat(H_BIAS)), 7); }

// Four Q7 values (i32 lanes) to four i16 at t.
static inline void store_t4(int16_t *t, v128_t v) { wasm_v128_store64_lane(t, wasm_i16x8_narrow_i32x4(v, v), 0); }

static void hpass_u8(int C, int P, const uint8_t *s0, int rowBytes, int rows, const uint8_t *groups, int G, int recSize,
                     int16_t *tmp, int resP, int plane) {
  // Per lane i and channel c: a window's bytes c and C + c (one pixel's tap pair) into i16 lanes
  // 2i and 2i + 1, zero elsewhere (for groups that need a window per lane).
  v128_t lane[4][4];
  for (int i = 0; i < 4; i++)
    for (int c = 0; c < C; c++) {
      uint8_t m[16];
      for (int b = 0; b < 16; b++) m[b] = 0x80;
      m[4 * i] = (uint8_t)c;
      m[4 * i + 2] = (uint8_t)(C + c);
      lane[i][c] = wasm_v128_load(m);
    }
  for (int g = 0; g < G; g++) {
    const uint8_t *rec = groups + g * recSize;
    const int32_t *head = (const int32_t *)rec;
    const v128_t *mp = (const v128_t *)(rec + REC_HEAD);
    const v128_t *wk = (const v128_t *)(rec + REC_HEAD + 16 * C);
    int16_t *t = tmp + 4 * g;
    const uint8_t *q = s0 + head[0];
    if (head[1] && P == 1 && C == 3) {
      // The loader's case: RGB, two taps, one window a row.
      const v128_t w0 = wk[0], m0 = mp[0], m1 = mp[1], m2 = mp[2];
      for (int r = 0; r < rows; r++, q += rowBytes, t += resP) {
        v128_t L = wasm_v128_load(q);
        store_t4(t, h_round(wasm_i32x4_dot_i16x8(wasm_i8x16_swizzle(L, m0), w0)));
        store_t4(t + plane, h_round(wasm_i32x4_dot_i16x8(wasm_i8x16_swizzle(L, m1), w0)));
        store_t4(t + 2 * plane, h_round(wasm_i32x4_dot_i16x8(wasm_i8x16_swizzle(L, m2), w0)));
      }
    } else if (head[1]) {
      for (int r = 0; r < rows; r++, q += rowBytes, t += resP)
        for (int c = 0; c < C; c++) {
          v128_t acc = wasm_i32x4_splat(0);
          for (int k = 0; k < P; k++)
            acc = wasm_i32x4_add(acc, wasm_i32x4_dot_i16x8(wasm_i8x16_swizzle(wasm_v128_load(q + 2 * k * C), mp[c]), wk[k]));
          store_t4(t + c * plane, h_round(acc));
        }
    } else {
      // Spans too far apart for one window (strong shrinking): a window per lane at its own
      // start, each lane's pair of taps swizzled into its own two i16 lanes, the four merged.
      const int32_t *offs = (const int32_t *)(rec + 16);
      for (int r = 0; r < rows; r++, t += resP) {
        const uint8_t *row = s0 + r * rowBytes;
        v128_t acc[4];
        for (int c = 0; c < C; c++) acc[c] = wasm_i32x4_splat(0);
        for (int k = 0; k < P; k++) {
          const int o = 2 * k * C;
          const v128_t L0 = wasm_v128_load(row + offs[0] + o), L1 = wasm_v128_load(row + offs[1] + o);
          const v128_t L2 = wasm_v128_load(row + offs[2] + o), L3 = wasm_v128_load(row + offs[3] + o);
          for (int c = 0; c < C; c++) {
            v128_t v = wasm_v128_or(wasm_v128_or(wasm_i8x16_swizzle(L0, lane[0][c]), wasm_i8x16_swizzle(L1, lane[1][c])),
                                    wasm_v128_or(wasm_i8x16_swizzle(L2, lane[2][c]), wasm_i8x16_swizzle(L3, lane[3][c])));
            acc[c] = wasm_i32x4_add(acc[c], wasm_i32x4_dot_i16x8(v, wk[k]));
          }
        }
        for (int c = 0; c < C; c++) store_t4(t + c * plane, h_round(acc[c]));
      }
    }
  }
}

// Eight outputs of a tap pair: rows a and b interleaved into (a, b) pairs, dotted with (q0, q1),
// shifted by `shift`.
static inline void v8(const int16_t *a, const int16_t *b, v128_t wp, v128_t *lo, v128_t *hi, int shift) {
  v128_t va = wasm_v128_load(a), vb = wasm_v128_load(b);
  *lo = wasm_i32x4_shr(wasm_i32x4_dot_i16x8(wasm_i16x8_shuffle(va, vb, 0, 8, 1, 9, 2, 10, 3, 11), wp), shift);
  *hi = wasm_i32x4_shr(wasm_i32x4_dot_i16x8(wasm_i16x8_shuffle(va, vb, 4, 12, 5, 13, 6, 14, 7, 15), wp), shift);
}

static void vpass_u8(int C, int res, int resP, const Axis *ys, const int16_t *tmp, int plane, uint8_t *out) {
  const int sy = ys->stride;
  const int resSq = res * res;
  for (int c = 0; c < C; c++) {
    const int16_t *tb = tmp + c * plane;
    uint8_t *ob = out + c * resSq;
    for (int y = 0; y < res; y++) {
      const int16_t *a = tb + (ys->start[y] - ys->lo) * resP;
      uint8_t *o = ob + y * res;
      const int16_t *wy = ys->q + y * sy;
      if (ys->two) {
        const v128_t wp = wasm_i32x4_splat((int32_t)(uint16_t)wy[0] | ((int32_t)wy[1] << 16));
        const int16_t *b = a + resP;
        int x = 0;
        for (; x + 16 <= resP; x += 16) {
          v128_t l0, h0, l1, h1;
          v8(a + x, b + x, wp, &l0, &h0, 21);
          v8(a + x + 8, b + x + 8, wp, &l1, &h1, 21);
          wasm_v128_store(o + x, wasm_u8x16_narrow_i16x8(wasm_i16x8_narrow_i32x4(l0, h0), wasm_i16x8_narrow_i32x4(l1, h1)));
        }
        // resP is a multiple of 4; an 8-wide load past the row reads the next row or tmp's slack.
        for (; x < resP; x += 8) {
          v128_t l0, h0;
          v8(a + x, b + x, wp, &l0, &h0, 21);
          v128_t s = wasm_i16x8_narrow_i32x4(l0, h0);
          s = wasm_u8x16_narrow_i16x8(s, s);
          if (x + 8 <= resP) wasm_v128_store64_lane(o + x, s, 0);
          else wasm_v128_store32_lane(o + x, s, 0);
        }
      } else {
        // Taps in pairs, as the two-tap rows; an odd last tap pairs with itself at weight 0.
        const int n = ys->count[y];
        for (int x = 0; x < resP; x += 8) {
          v128_t lo = wasm_i32x4_splat(0), hi = lo;
          for (int k = 0; k < n; k += 2) {
            const int16_t *ra = a + k * resP + x;
            const int two = k + 1 < n;
            const v128_t wp = wasm_i32x4_splat((int32_t)(uint16_t)wy[k] | ((int32_t)(two ? wy[k + 1] : 0) << 16));
            v128_t l, h;
            v8(ra, two ? ra + resP : ra, wp, &l, &h, 0);
            lo = wasm_i32x4_add(lo, l);
            hi = wasm_i32x4_add(hi, h);
          }
          v128_t s = wasm_i16x8_narrow_i32x4(wasm_i32x4_shr(lo, 21), wasm_i32x4_shr(hi, 21));
          s = wasm_u8x16_narrow_i16x8(s, s);
          if (x + 8 <= resP) wasm_v128_store64_lane(o + x, s, 0);
          else wasm_v128_store32_lane(o + x, s, 0);
        }
      }
    }
  }
}

static int run_u8(int res, int C, const uint8_t *src, int W, int H, int r0, int r1, double bx, double by, double bw, double bh,
                  int flip, uint8_t *out, uint8_t *scratch, int scratchCap, uint8_t *cacheMem, int cacheCap) {
  const int G = (res + 3) / 4;
  const int resP = 4 * G;
  const int sx = axis_stride(res, bw);
  const int sy = axis_stride(res, bh);
  const int recSize = REC_HEAD + 16 * C + 16 * ((sx + 1) / 2);
  const int tables = axes_bytes(res, sx, sy, 1) + G * recSize;
  // tmp: C planes of int16 rows, and 16 bytes of slack for the vertical pass's last 8-wide load.
  if (tables + C * (r1 - r0) * resP * 2 + 16 > scratchCap) return tables + C * (r1 - r0 + 1) * resP * 2 + 16;

  Axis xs, ys;
  uint8_t *own = carve_axes(&xs, &ys, scratch, res, sx, sy, 1);
  int16_t *tmp = (int16_t *)(own + G * recSize);
  Region yc, xc;
  const int cached = cache_layout(&yc, &xc, cacheMem, cacheCap, res, C, REC_HEAD + 16 * C + 16);
  if (!y_table(&ys, cached ? &yc : 0, res, H, by, bh, sy, 1)) return -2;
  const uint8_t *groups = x_groups(&xs, cached ? &xc : 0, 2, res, C, W, bx, bw, flip, sx, recSize, own);
  if (!groups) return -2;
  if (ys.lo < r0 || ys.hi > r1) return -1;
  const int rows = ys.hi - ys.lo;
  const int plane = rows * resP;
  hpass_u8(C, (sx + 1) / 2, src + (ys.lo - r0) * W * C, W * C, rows, groups, G, recSize, tmp, resP, plane);
  vpass_u8(C, res, resP, &ys, tmp, plane, out);
  return 0;
}
