// D map and fused pre-morphology mask on the CPU (GitHub issues 2 and 3).
//
//   dmap(gan, mse, window, scale)                                   -> float32 (N, H-10, W-10)
//   premask(gan, mse, labels, weights, threshold, window, scale)    -> uint8   (N, H-10, W-10)
//
// What is computed (shared/SPEC.md §1-3): per channel c, with x = scale*mse and y = scale*gan,
//   var_x = w*(x^2) - (w*x)^2 over an 11x11 window w (valid region only), same for y,
//   D_c = (2 sqrt(var_x+1e-8) sqrt(var_y+1e-8) + C) / (var_x + var_y + C),  D = mean_c D_c,
// and premask = clip(D * W[label], 0, 1) < threshold.
//
// Design: one fused pass, no full-size intermediate planes.
//  * Work items are (image, strip of output rows); the desra::parallel_for threads take them from
//    a shared counter (about 4 per thread, for balance on shared cores).
//  * A strip is walked in column tiles of kTileCols output pixels. For every input row of the
//    strip (strip rows + the 10-row vertical halo) the tile's input segment (+10 columns of
//    horizontal halo) is converted to float64, centred (v - 127.5), squared, and filtered
//    horizontally into a ring of the last 14 rows (moments of x, x^2, y, y^2). Every 4 new rows
//    finish 4 output rows at once (each ring value loaded once serves 4 rows): vertical 11-tap
//    sums, variances, D_c (float32), channel mean, and the result goes straight to the D output or
//    through the threshold. The ring is 14 x 4 x kTileCols*C doubles = 172 KB for RGB: it stays
//    in L2; the per-row buffers stay in L1. Channels stay interleaved (NHWC) through both passes:
//    a horizontal tap is at offset j*C, so every inner loop is unit-stride over elements.
//    The hot loops (uint8 conversion, horizontal, vertical, D formula, threshold) have AVX-512
//    bodies and a plain C++ fallback/tail computing the same sums in the same order.
//  * Input dtype (uint8/uint16/float32/float64) and C (1, 3) are template parameters; any byte
//    strides are read directly (no copies); a row whose pixels are packed (stride W = C*itemsize,
//    stride C = itemsize) takes a flat conversion loop (intrinsics for uint8: the common
//    contiguous NHWC case) and the next row segment is prefetched.
//
// Why float64 moments: the hard case is a nearly flat MSE region (var_x ~ 0.01..1) next to a
// textured GAN one. There |dD/dvar_x| ~ sy/(sx*(sy^2+C)) is large (up to 654 at var_x = 0), and a
// float32 E[x^2] - mu^2 cancels values ~65025 down to ~0.01, losing ~1e-3 in D. Any float32
// scheme then needs per-pixel error bounds and frequent float64 repair on smooth gradients (sky),
// where a tile-wide offset does not track the local mean. The separable float64 pass costs 2x the
// float32 lanes but is uniformly good: |var error| <= 8.9e-15 * a^2 (a = 127.5 after centring),
// i.e. <= 1.5e-10, so |D32 - D| <= 2e-7 (variances) + 1.4e-6 (float32 formula) everywhere.
// The D formula itself (sqrt, division) runs in float32: 16 lanes, and its error is bounded below.
//
// Error bound (u64 = 2^-53, u32 = 2^-24; gamma_n = n*u64/(1 - n*u64)):
//  (1) Main pass, values centred so |v - centre| <= a. Each moment is a horizontal then a vertical
//      11-term chain: for the nonnegative sum m2 = w*(v-centre)^2 the relative error is
//      <= gamma_23 (one rounding of the square, 11 + 11 multiply-adds); |error of m1| <= gamma_22*a;
//      the separable weights g_i*g_j differ from the reference's rounded np.outer by <= 1 ulp
//      (a consistent weight perturbation, changes var by <= 3 u64 * a^2). With the squaring and
//      subtraction roundings, |var error| <= (3 gamma_23 + 5 u64) a^2. Centring v - 127.5 is exact
//      for integer inputs with scale 1; otherwise it perturbs each value by <= u64*a, i.e. var by
//      <= 2 u64 a^2. Total <= 80 u64 a^2 (kMainVarErr).
//  (2) The float64 recomputation (the "reference"), direct 121-term sums of uncentred |v| <= b:
//      |var error| <= (gamma_122 + 2 gamma_121 + 3 u64) b^2 <= 400 u64 b^2 (kRefVarErr).
//  (3) Sensitivity: dD_c/dvar_x = (sy/sx)/M - N/M^2 with sx = sqrt(var_x+1e-8), M = var_x+var_y+C,
//      N = 2 sx sy + C <= M + 2e-8. Since sy/M <= sy/(sy^2 + C - 1e-8) <= 1/(2 sqrt(C)) and
//      1/sx <= 1e4, |dD_c/dvar| <= 653.6 + 1/C < 653.7 (kMaxVarSensitivity) for all var >= 0.
//      Both computed variances are clamped at 0 and the exact ones are >= 0, so the mean value
//      theorem applies on [0, inf) and clamping only moves a value towards the exact one.
//  (4) Float32 evaluation (kEvalErr32 = 24 u32): conversion of each variance to float32 (relative
//      u32; |v dD/dv| <= 1, so <= 2 u32 for both), +1e-8 (2 u32), product (u32), sqrt as
//      prod * rsqrt refined by one Newton step (1.5*2^-28 ~ 0.1 u32 + 4 roundings: <= 4.5 u32),
//      2p + C (u32), vx + vy + C (2 u32), 1/den by rcp + one Newton step (2^-28 + 2 roundings:
//      <= 2.5 u32) and the product (u32), channel mean ((d0+d1)+d2)/3 (<= 4 u32): <= 20 u32.
//  D_c and D are <= 1 + 2e-8/C, so relative and absolute errors coincide. Hence
//      |D32 - D_ref64| <= band = 2 * 653.7 * (kMainVarErr a^2 + kRefVarErr b^2) + kEvalErr32,
//  about 5.4e-6 for 0..255 data (the factor 2: var_x and var_y of a channel; the channel mean does
//  not increase the bound). premask decides every pixel with |D32*W - threshold| > |W|*band from
//  the float32 value (both values lie on the same side of the threshold, and clip(.,0,1) < t is
//  monotone in D*W) and recomputes the others in float64 exactly as the reference formula.
//  For the D map output, |D32 - D_exact| <= 2*653.7*kMainVarErr*a^2 + kEvalErr32 ~ 1.6e-6.
//  a and b come from the dtype range for integer inputs and from the values actually read
//  (running min/max over the strip) for float inputs, so out-of-range floats widen the band.
//
// Border rules: only the valid region is produced: output (o, x) is centred on input (o+5, x+5)
// and its window is rows o..o+10, columns x..x+10, so no padding is ever read; the label of
// output (o, x) is labels[n, o+5, x+5] (labels are full-size, like the images).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#if defined(__AVX512F__)
#include <immintrin.h>
// GCC 12's avx512fintrin.h trips -Wmaybe-uninitialized (its _mm512_cvtpd_ps uses an undefined
// vector as pass-through); the warning is about the header, not this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

// GCC tunes this CPU for 256-bit vectors by default; the auto-vectorized loops (conversion of
// other dtypes, channel mean) run faster with zmm registers. This changes no result (no reassociation, no fast-math), so the
// error bound below stands. (Set before the includes so the inlined helpers get it too: GCC does
// not inline across different target options.)
#if defined(__GNUC__) && !defined(__clang__) && defined(__AVX512F__)
#pragma GCC target("prefer-vector-width=512")
#endif

#include "desra/dmap_math.h"
#include "desra/hd.h"
#include "desra/parallel.h"

namespace py = pybind11;

namespace desra {
namespace {

constexpr int kTileCols = 128;     // output pixels per column tile (ring = 172 KB for RGB, in L2;
                                   // measured: 128-192 beat 64 (halo) and 256-512 (cache misses))
constexpr int kMinStripRows = 64;  // a strip re-filters 10 halo rows: keep that overhead small
constexpr int kItemsPerThread = 4; // work items per thread, for load balance on shared cores
constexpr double kCentre = 127.5;  // centre of the 0..255 scale: |v - kCentre| <= 127.5 in range
constexpr int kPlanes = 4;         // ring planes: w*x, w*x^2 (MSE), w*y, w*y^2 (GAN)

// An (N, H, W, C) array seen through its byte strides (any sign, no copies).
struct Image4 {
  const char* data;
  int64_t sn, sh, sw, sc;
  const char* at(int64_t n, int64_t r, int64_t x, int64_t c) const {
    return data + n * sn + r * sh + x * sw + c * sc;
  }
};

struct Labels3 {
  const char* data = nullptr;  // nullptr: no segmentation, W = 1
  int64_t sn = 0, sh = 0, sw = 0;
  uint8_t at(int64_t n, int64_t r, int64_t x) const { return static_cast<uint8_t>(data[n * sn + r * sh + x * sw]); }
};

struct Problem {
  int n, h, w, c, hout, wout;
  double scale;
  double g[kTaps];           // separable taps of the fast path
  double w2[kTaps][kTaps];   // the reference's 2-D window (np.outer(k, k), or 1/121)
};

// Unaligned-safe element load (numpy views need not be aligned); compiles to a plain load.
template <typename T>
inline double load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return static_cast<double>(v);
}

// Bound inputs of the error band: a = max |v - kCentre|, b = max |v| over the values read.
struct Range {
  double lo = std::numeric_limits<double>::infinity();
  double hi = -std::numeric_limits<double>::infinity();
  void add(double v) {
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  double a() const { return std::max(hi - kCentre, kCentre - lo); }
  double b() const { return std::max(std::fabs(lo), std::fabs(hi)); }
};

// |D32 - D64 reference| bound for values within `r` (see "Error bound" above).
double error_band(const Range& r) {
  if (!(r.lo <= r.hi)) return 0.0;  // nothing read yet
  const double a = r.a(), b = r.b();
  return 2.0 * kMaxVarSensitivity * (kMainVarErr * a * a + kRefVarErr * b * b) + kEvalErr32;
}

// D at output (o, x) of image n recomputed in float64 exactly as the released script: direct
// 121-term sums of the scaled values and their squares, var = E[v^2] - E[v]^2, D_c, np.mean.
double reference_pixel_d(const Problem& p, const Image4& gan, const Image4& mse, int n, int o,
                         int x, double (*ld)(const char*)) {
  double sum = 0;
  for (int c = 0; c < p.c; ++c) {
    double var[2];
    const Image4* im[2] = {&mse, &gan};
    for (int k = 0; k < 2; ++k) {
      double mu = 0, m2 = 0;
      for (int i = 0; i < kTaps; ++i)
        for (int j = 0; j < kTaps; ++j) {
          const double v = ld(im[k]->at(n, o + i, x + j, c)) * p.scale;
          mu += p.w2[i][j] * v;
          m2 += p.w2[i][j] * (v * v);
        }
      var[k] = m2 - mu * mu;
    }
    sum += channel_d64(var[0], var[1]);
  }
  return sum / p.c;
}

// clip(x, 0, 1) < threshold with numpy's NaN semantics (NaN stays NaN, NaN < t is false).
inline bool below(double x, double threshold) {
  if (x != x) return false;
  x = x < 0 ? 0 : (x > 1 ? 1 : x);
  return x < threshold;
}

std::atomic<int64_t> g_fallback_pixels{0};  // premask pixels decided in float64 (diagnostics)

constexpr int kBlockRows = 4;                      // output rows finished per vertical pass
constexpr int kRingRows = kTaps - 1 + kBlockRows;  // input rows those need: 14

// Per-thread scratch, allocated once per parallel_for chunk. Row lengths are multiples of 16
// elements, so the vector loops may run over whole vectors past a tile's last element (the
// extra lanes hold stale finite data and are never read back as results).
template <int C>
struct Scratch {
  static constexpr int kIn = (kTileCols + kTaps - 1) * C;  // input row segment incl. halo
  static constexpr int kOut = kTileCols * C;               // output elements per ring row
  static_assert(kOut % 16 == 0, "vector loops round lengths up to 16 elements");
  std::vector<double> xrow[2], sqrow[2];                   // [0] = MSE, [1] = GAN
  std::vector<double> ring;                                // [slot][plane][kOut], kRingRows slots
  std::vector<float> vx, vy;                               // [kBlockRows][kOut] variances
  std::vector<float> dch;                                  // D_c of one row segment
  std::vector<float> drow;                                 // D of one row segment
  Scratch()
      : ring(static_cast<size_t>(kRingRows) * kPlanes * kOut),
        vx(kBlockRows * kOut),
        vy(kBlockRows * kOut),
        dch(kOut),
        drow(kTileCols) {
    for (int k = 0; k < 2; ++k) {
      xrow[k].resize(kIn + 16);
      sqrow[k].resize(kIn + 16);
    }
  }
};

// Brings the next input row segment towards L1 while the current one is filtered: each tile row
// is a short run in a different page, which the hardware prefetcher does not anticipate.
template <typename T, int C>
inline void prefetch_row(const Image4& im, int n, int r, int x0, int count) {
  if (im.sc != static_cast<int64_t>(sizeof(T)) || im.sw != static_cast<int64_t>(C * sizeof(T))) return;
  const char* base = im.at(n, r, x0, 0);
  const int64_t bytes = static_cast<int64_t>(count) * C * sizeof(T);
  for (int64_t b = 0; b < bytes; b += 64) {
#if defined(__x86_64__) && defined(__GNUC__)
    // GCC 12 silently drops __builtin_prefetch in this file (checked in the assembly).
    asm volatile("prefetcht0 %0" : : "m"(*(base + b)));
#else
    __builtin_prefetch(base + b);
#endif
  }
}

// Converts `count` pixels of row r (from column x0) to centred float64 values and their squares.
template <typename T, int C>
void convert_row(const Image4& im, int n, int r, int x0, int count, double scale, double* __restrict xr,
                 double* __restrict sq, Range* range) {
  const char* base = im.at(n, r, x0, 0);
  const int len = count * C;
  if (im.sc == static_cast<int64_t>(sizeof(T)) && im.sw == static_cast<int64_t>(C * sizeof(T))) {
    // Packed pixels (contiguous NHWC row): one flat loop over the row's elements.
    int k = 0;
#if defined(__AVX512F__)
    if (std::is_same<T, uint8_t>::value) {  // the common case: 8 bytes -> 8 doubles per step
      const __m512d sc = _mm512_set1_pd(scale), ctr = _mm512_set1_pd(kCentre);
      const auto* b = reinterpret_cast<const unsigned char*>(base);
      for (; k + 8 <= len; k += 8) {
        const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(b + k));
        const __m512d v = _mm512_sub_pd(_mm512_mul_pd(_mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(bytes)), sc), ctr);
        _mm512_storeu_pd(xr + k, v);
        _mm512_storeu_pd(sq + k, _mm512_mul_pd(v, v));
      }
    }
#endif
    for (; k < len; ++k) {
      const double v = load<T>(base + static_cast<int64_t>(k) * sizeof(T)) * scale - kCentre;
      xr[k] = v;
      sq[k] = v * v;
    }
  } else {
    for (int x = 0; x < count; ++x)
      for (int c = 0; c < C; ++c) {
        const double v = load<T>(base + x * im.sw + c * im.sc) * scale - kCentre;
        xr[x * C + c] = v;
        sq[x * C + c] = v * v;
      }
  }
  if (range) {  // float inputs: the band needs the actual magnitudes (NaN values are skipped)
    int k = 0;
#if defined(__AVX512F__)
    if (len >= 8) {
      // min_pd(v, acc) returns acc when v is NaN, like Range::add.
      __m512d lo = _mm512_set1_pd(range->lo - kCentre), hi = _mm512_set1_pd(range->hi - kCentre);
      for (; k + 8 <= len; k += 8) {
        const __m512d v = _mm512_loadu_pd(xr + k);
        lo = _mm512_min_pd(v, lo);
        hi = _mm512_max_pd(v, hi);
      }
      range->add(_mm512_reduce_min_pd(lo) + kCentre);
      range->add(_mm512_reduce_max_pd(hi) + kCentre);
    }
#endif
    for (; k < len; ++k) range->add(xr[k] + kCentre);
  }
}

// Horizontal 11-tap pass: h1 = g*x, h2 = g*x^2 for `len` output elements (taps C apart, so the
// channels stay interleaved). Each sum adds its taps in order j = 0..10 starting from 0.
template <int C>
void horizontal(const double* __restrict g, const double* __restrict xr, const double* __restrict sq, int len,
                double* __restrict h1, double* __restrict h2) {
  int k = 0;
#if defined(__AVX512F__)
  __m512d gv[kTaps];
  for (int j = 0; j < kTaps; ++j) gv[j] = _mm512_set1_pd(g[j]);
  for (; k < len; k += 16) {  // two vectors per step: four independent FMA chains
    __m512d a0 = _mm512_setzero_pd(), a1 = a0, b0 = a0, b1 = a0;
#pragma GCC unroll 11
    for (int j = 0; j < kTaps; ++j) {
      a0 = _mm512_fmadd_pd(gv[j], _mm512_loadu_pd(xr + k + j * C), a0);
      a1 = _mm512_fmadd_pd(gv[j], _mm512_loadu_pd(xr + k + 8 + j * C), a1);
      b0 = _mm512_fmadd_pd(gv[j], _mm512_loadu_pd(sq + k + j * C), b0);
      b1 = _mm512_fmadd_pd(gv[j], _mm512_loadu_pd(sq + k + 8 + j * C), b1);
    }
    _mm512_storeu_pd(h1 + k, a0);
    _mm512_storeu_pd(h1 + k + 8, a1);
    _mm512_storeu_pd(h2 + k, b0);
    _mm512_storeu_pd(h2 + k + 8, b1);
  }
#endif
  for (; k < len; ++k) {
    double s1 = 0, s2 = 0;
    for (int j = 0; j < kTaps; ++j) {
      s1 += g[j] * xr[k + j * C];
      s2 += g[j] * sq[k + j * C];
    }
    h1[k] = s1;
    h2[k] = s2;
  }
}

// D_c for `len` elements from the two variance rows (float32). The AVX-512 body replaces sqrt and
// division (each ~10x the cost of an FMA in zmm) by the 14-bit hardware estimates refined with one
// Newton step (relative error 1.5*2^-28 and 2^-28 before rounding, plus a few float32 roundings;
// counted in kEvalErr32). The scalar tail uses channel_d(), whose error is smaller.
void channel_d_row(const float* __restrict vx, const float* __restrict vy, int len, float* __restrict dch) {
  int k = 0;
#if defined(__AVX512F__)
  const __m512 zero = _mm512_setzero_ps(), eps = _mm512_set1_ps(kVarEpsf), c = _mm512_set1_ps(kCf),
               half = _mm512_set1_ps(0.5f), three_halves = _mm512_set1_ps(1.5f), two = _mm512_set1_ps(2.f);
  for (; k + 16 <= len; k += 16) {
    // max(0, v) returns v when v is NaN, like `v < 0 ? 0 : v`.
    const __m512 x = _mm512_max_ps(zero, _mm512_loadu_ps(vx + k));
    const __m512 y = _mm512_max_ps(zero, _mm512_loadu_ps(vy + k));
    const __m512 prod = _mm512_mul_ps(_mm512_add_ps(x, eps), _mm512_add_ps(y, eps));  // >= 1e-16
    __m512 r = _mm512_rsqrt14_ps(prod);                                               // ~1/sqrt
    r = _mm512_mul_ps(r, _mm512_fnmadd_ps(_mm512_mul_ps(_mm512_mul_ps(half, prod), r), r, three_halves));
    const __m512 num = _mm512_fmadd_ps(two, _mm512_mul_ps(prod, r), c);  // 2 sqrt(prod) + C
    const __m512 den = _mm512_add_ps(_mm512_add_ps(x, y), c);
    __m512 q = _mm512_rcp14_ps(den);  // ~1/den
    q = _mm512_mul_ps(q, _mm512_fnmadd_ps(den, q, two));
    _mm512_storeu_ps(dch + k, _mm512_mul_ps(num, q));
  }
#endif
  for (; k < len; ++k) dch[k] = channel_d(vx[k], vy[k]);
}

// Vertical 11-tap pass for Q consecutive output rows: rows[i] is the ring slot of input row
// o + i (i < Q + 10); planes 0/1 hold g*x and g*x^2 of the MSE image, 2/3 those of the GAN image.
// Writes var = E[v^2] - E[v]^2 (float32) to vx/vy + q * kOut for `len` elements.
// Why Q rows at once: the ring does not fit in L1, and one output row alone loads 44 doubles per
// element from L2; Q = 4 rows share each loaded value (14 loads per plane for 4 rows, not 44).
template <int Q, int kOut>
void vertical_block(const double* __restrict g, const double* const* rows, int len, float* __restrict vx,
                    float* __restrict vy) {
  constexpr int kIn = Q + kTaps - 1;
  int k = 0;
#if defined(__AVX512F__)
  __m512d gv[kTaps];
  for (int t = 0; t < kTaps; ++t) gv[t] = _mm512_set1_pd(g[t]);
  for (; k < len; k += 8) {
#pragma GCC unroll 2
    for (int img = 0; img < 2; ++img) {
      __m512d m1[Q], m2[Q];
      for (int q = 0; q < Q; ++q) m1[q] = m2[q] = _mm512_setzero_pd();
#pragma GCC unroll 14
      for (int i = 0; i < kIn; ++i) {
        const __m512d v1 = _mm512_loadu_pd(rows[i] + (2 * img) * kOut + k);
        const __m512d v2 = _mm512_loadu_pd(rows[i] + (2 * img + 1) * kOut + k);
#pragma GCC unroll 4
        for (int q = 0; q < Q; ++q) {
          const int t = i - q;  // tap of input row o + i for output row o + q
          if (t < 0 || t >= kTaps) continue;
          m1[q] = _mm512_fmadd_pd(gv[t], v1, m1[q]);
          m2[q] = _mm512_fmadd_pd(gv[t], v2, m2[q]);
        }
      }
      float* dst = img == 0 ? vx : vy;
      for (int q = 0; q < Q; ++q)
        _mm256_storeu_ps(dst + q * kOut + k, _mm512_cvtpd_ps(_mm512_fnmadd_pd(m1[q], m1[q], m2[q])));
    }
  }
#endif
  for (; k < len; ++k)
    for (int img = 0; img < 2; ++img)
      for (int q = 0; q < Q; ++q) {
        double m1 = 0, m2 = 0;
        for (int t = 0; t < kTaps; ++t) {
          m1 += g[t] * rows[q + t][(2 * img) * kOut + k];
          m2 += g[t] * rows[q + t][(2 * img + 1) * kOut + k];
        }
        (img == 0 ? vx : vy)[q * kOut + k] = static_cast<float>(m2 - m1 * m1);
      }
}

// Channel mean: D = ((D_0 + D_1) + D_2) / 3 as np.mean over the stacked channels.
template <int C>
void channel_mean(const float* __restrict dch, int count, float* __restrict d) {
  if (C == 1) {
    std::memcpy(d, dch, sizeof(float) * count);
  } else {
    for (int x = 0; x < count; ++x) d[x] = (dch[3 * x] + dch[3 * x + 1] + dch[3 * x + 2]) / 3.0f;
  }
}

// Where finished D rows go: straight into the float32 output, or through the threshold.
struct DmapSink {
  float* out;  // C-contiguous (N, hout, wout)
  int hout, wout;
  void row(const Problem&, int n, int o, int x0, int count, const float* d, double /*band*/) {
    std::memcpy(out + (static_cast<int64_t>(n) * hout + o) * wout + x0, d, sizeof(float) * count);
  }
  void finish() {}
};

struct PremaskSink {
  uint8_t* out;  // C-contiguous (N, hout, wout)
  int hout, wout;
  Labels3 labels;
  const double* weights;  // kNumClasses entries
  double threshold;
  const Image4* gan;
  const Image4* mse;
  double (*ld)(const char*);
  std::atomic<int64_t>* total_fallbacks;
  std::atomic<bool>* total_bad_label;
  int64_t fallbacks = 0;   // this chunk's pixels decided in float64
  bool bad_label = false;  // this chunk met a label >= kNumClasses
  double wrow[kTileCols];  // W[label] of the row segment
  uint8_t near[kTileCols]; // 1 where the float32 decision is not certain
  void row(const Problem& p, int n, int o, int x0, int count, const float* d, double band) {
    uint8_t* dst = out + (static_cast<int64_t>(n) * hout + o) * wout + x0;
    if (labels.data) {
      int worst = 0;
      for (int i = 0; i < count; ++i) {
        const int lab = labels.at(n, o + kHalo, x0 + i + kHalo);
        worst = std::max(worst, lab);
        wrow[i] = weights[std::min(lab, kNumClasses - 1)];
      }
      if (worst >= kNumClasses) bad_label = true;  // reported as ValueError after the run
    } else {
      std::fill(wrow, wrow + count, 1.0);
    }
    // The float32 decision, and whether |D32*W - t| is within
    // the error band (|W| * band, plus a few ulps of the product). A non-finite W is never near:
    // D > 0, so D*W is then +-inf or NaN whatever D's last bits are.
    const double t = threshold, slack = band * (1 + 1e-9);
    uint8_t any = 0;
    int i = 0;
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__)
    const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0), tv = _mm512_set1_pd(t),
                  sv = _mm512_set1_pd(slack), ulps = _mm512_set1_pd(1e-15), tabs = _mm512_set1_pd(std::fabs(t)),
                  dmax = _mm512_set1_pd(std::numeric_limits<double>::max());
    for (; i + 8 <= count; i += 8) {
      const __m512d w = _mm512_loadu_pd(wrow + i);
      const __m512d xv = _mm512_mul_pd(_mm512_cvtps_pd(_mm256_loadu_ps(d + i)), w);
      // max(0, x) / min(1, x) return x when x is NaN, like np.clip; NaN < t is false.
      const __m512d c = _mm512_min_pd(one, _mm512_max_pd(zero, xv));
      const __mmask8 below_t = _mm512_cmp_pd_mask(c, tv, _CMP_LT_OQ);
      const __m512d aw = _mm512_abs_pd(w);
      const __m512d lim = _mm512_fmadd_pd(aw, sv, _mm512_mul_pd(ulps, _mm512_add_pd(_mm512_abs_pd(xv), tabs)));
      const __mmask8 is_near = _mm512_cmp_pd_mask(_mm512_abs_pd(_mm512_sub_pd(xv, tv)), lim, _CMP_LE_OQ) &
                               _mm512_cmp_pd_mask(aw, dmax, _CMP_LE_OQ);
      _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + i), _mm_maskz_set1_epi8(below_t, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(near + i), _mm_maskz_set1_epi8(is_near, 1));
      any |= is_near;
    }
#endif
    for (; i < count; ++i) {
      const double w = wrow[i];
      const double xv = static_cast<double>(d[i]) * w;
      dst[i] = below(xv, t);
      const bool finite_w = std::fabs(w) <= std::numeric_limits<double>::max();
      near[i] = finite_w && std::fabs(xv - t) <= std::fabs(w) * slack + 1e-15 * (std::fabs(xv) + std::fabs(t));
      any |= near[i];
    }
    if (!any) return;
    for (i = 0; i < count; ++i) {
      if (!near[i]) continue;
      dst[i] = below(reference_pixel_d(p, *gan, *mse, n, o, x0 + i, ld) * wrow[i], t);
      ++fallbacks;
    }
  }
  void finish() {
    total_fallbacks->fetch_add(fallbacks);
    if (bad_label) total_bad_label->store(true);
  }
};

// One work item: output rows [r0, r1) of image n, all columns, tile by tile.
template <typename T, int C, typename Sink>
void run_strip(const Problem& p, const Image4& gan, const Image4& mse, int n, int r0, int r1, Scratch<C>& s,
               Sink& sink) {
  constexpr bool kTrackRange = !std::is_integral<T>::value;
  Range range;
  if (!kTrackRange) {  // integer dtypes: the scaled range is known without reading the data
    range.add(0.0);
    range.add(static_cast<double>(std::numeric_limits<T>::max()) * p.scale);
  }
  constexpr int kOut = Scratch<C>::kOut;
  constexpr int64_t kSlot = kPlanes * kOut;
  for (int x0 = 0; x0 < p.wout; x0 += kTileCols) {
    const int tw = std::min(kTileCols, p.wout - x0);
    const int in_w = tw + kTaps - 1;
    // Input row r -> its horizontal moments in ring slot r % kRingRows.
    auto filter_row = [&](int r) {
      if (r + 1 < p.h) {
        prefetch_row<T, C>(mse, n, r + 1, x0, in_w);
        prefetch_row<T, C>(gan, n, r + 1, x0, in_w);
      }
      double* slot = s.ring.data() + (r % kRingRows) * kSlot;
      Range* rg = kTrackRange ? &range : nullptr;
      convert_row<T, C>(mse, n, r, x0, in_w, p.scale, s.xrow[0].data(), s.sqrow[0].data(), rg);
      convert_row<T, C>(gan, n, r, x0, in_w, p.scale, s.xrow[1].data(), s.sqrow[1].data(), rg);
      horizontal<C>(p.g, s.xrow[0].data(), s.sqrow[0].data(), tw * C, slot, slot + kOut);
      horizontal<C>(p.g, s.xrow[1].data(), s.sqrow[1].data(), tw * C, slot + 2 * kOut, slot + 3 * kOut);
    };
    for (int r = r0; r < r0 + kTaps - 1; ++r) filter_row(r);  // the 10-row halo above
    for (int o = r0; o < r1; o += kBlockRows) {
      const int q = std::min(kBlockRows, r1 - o);
      for (int r = o + kTaps - 1; r < o + kTaps - 1 + q; ++r) filter_row(r);
      const double* rows[kRingRows];
      for (int i = 0; i < q + kTaps - 1; ++i) rows[i] = s.ring.data() + ((o + i) % kRingRows) * kSlot;
      switch (q) {
        case 4: vertical_block<4, kOut>(p.g, rows, tw * C, s.vx.data(), s.vy.data()); break;
        case 3: vertical_block<3, kOut>(p.g, rows, tw * C, s.vx.data(), s.vy.data()); break;
        case 2: vertical_block<2, kOut>(p.g, rows, tw * C, s.vx.data(), s.vy.data()); break;
        default: vertical_block<1, kOut>(p.g, rows, tw * C, s.vx.data(), s.vy.data()); break;
      }
      const double band = error_band(range);
      for (int i = 0; i < q; ++i) {
        channel_d_row(s.vx.data() + i * kOut, s.vy.data() + i * kOut, tw * C, s.dch.data());
        channel_mean<C>(s.dch.data(), tw, s.drow.data());
        sink.row(p, n, o + i, x0, tw, s.drow.data(), band);
      }
    }
  }
}

// Splits the batch into (image, row strip) items; every pool thread takes the next free item
// from a shared counter. Why not parallel_for's static chunks directly: the pool runs on shared
// cores (other processes, the GIL holder), and a late thread would then hold up the whole call;
// with ~4 items per thread the others pick up its share.
template <typename T, int C, typename MakeSink>
void run_all(const Problem& p, const Image4& gan, const Image4& mse, MakeSink make_sink) {
  const int threads = std::max(1, num_threads());
  // Strips tall enough that re-filtering the 10 halo rows of each stays a few percent of the work.
  const int want = std::max(1, (kItemsPerThread * threads + p.n - 1) / p.n);
  const int strips = std::max(1, std::min(want, p.hout / kMinStripRows));
  const int rows = (p.hout + strips - 1) / strips;
  const int64_t items = static_cast<int64_t>(p.n) * strips;
  std::atomic<int64_t> next{0};
  parallel_for(std::min<int64_t>(threads, items), 1, [&](int64_t, int64_t) {
    Scratch<C> scratch;
    auto sink = make_sink();
    for (int64_t it = next++; it < items; it = next++) {
      const int n = static_cast<int>(it / strips);
      const int r0 = static_cast<int>(it % strips) * rows;
      const int r1 = std::min(p.hout, r0 + rows);
      if (r0 < r1) run_strip<T, C>(p, gan, mse, n, r0, r1, scratch, sink);
    }
    sink.finish();
  });
}

// ---------------------------------------------------------------------------------------------
// Python-facing validation and dispatch.

enum class DType { kU8, kU16, kF32, kF64 };

DType dtype_of(const py::array& a, const char* name) {
  const py::dtype dt = a.dtype();
  if (dt.equal(py::dtype::of<uint8_t>())) return DType::kU8;
  if (dt.equal(py::dtype::of<uint16_t>())) return DType::kU16;
  if (dt.equal(py::dtype::of<float>())) return DType::kF32;
  if (dt.equal(py::dtype::of<double>())) return DType::kF64;
  throw py::value_error(std::string(name) + ": unsupported dtype " + py::str(dt).cast<std::string>() +
                        " (expected native uint8, uint16, float32 or float64)");
}

struct Inputs {
  Problem p;
  Image4 gan, mse;
  DType dtype;
};

Image4 view4(const py::array& a) {
  return Image4{static_cast<const char*>(a.data()), a.strides(0), a.strides(1), a.strides(2), a.strides(3)};
}

Inputs validate(const py::array& gan, const py::array& mse, int window, double scale) {
  if (gan.ndim() != 4 || mse.ndim() != 4)
    throw py::value_error("dmap: gan and mse must be 4-D (N, H, W, C) arrays, got ndim " + std::to_string(gan.ndim()) +
                          " and " + std::to_string(mse.ndim()));
  for (int d = 0; d < 4; ++d)
    if (gan.shape(d) != mse.shape(d))
      throw py::value_error("dmap: gan and mse shapes differ (axis " + std::to_string(d) + ": " +
                            std::to_string(gan.shape(d)) + " vs " + std::to_string(mse.shape(d)) + ")");
  const DType dg = dtype_of(gan, "gan"), dm = dtype_of(mse, "mse");
  if (dg != dm) throw py::value_error("dmap: gan and mse must have the same dtype");
  const int64_t n = gan.shape(0), h = gan.shape(1), w = gan.shape(2), c = gan.shape(3);
  if (c != 1 && c != 3) throw py::value_error("dmap: C must be 1 or 3, got " + std::to_string(c));
  if (h < kWindow || w < kWindow)
    throw py::value_error("dmap: H and W must be >= 11 (the window), got " + std::to_string(h) + "x" + std::to_string(w));
  if (n < 1) throw py::value_error("dmap: empty batch");
  if (h > (1 << 30) || w > (1 << 30) || n > (1 << 30)) throw py::value_error("dmap: image too large");
  if (window != kWindowGaussian && window != kWindowBox)
    throw py::value_error("dmap: window must be 0 (Gaussian) or 1 (box), got " + std::to_string(window));
  if (!std::isfinite(scale) || scale <= 0) throw py::value_error("dmap: scale must be finite and > 0");
  Inputs in;
  Problem& p = in.p;
  p.n = static_cast<int>(n);
  p.h = static_cast<int>(h);
  p.w = static_cast<int>(w);
  p.c = static_cast<int>(c);
  p.hout = p.h - (kWindow - 1);
  p.wout = p.w - (kWindow - 1);
  p.scale = scale;
  window_taps(window, p.g);
  for (int i = 0; i < kTaps; ++i)
    for (int j = 0; j < kTaps; ++j) p.w2[i][j] = window == kWindowBox ? 1.0 / (kTaps * kTaps) : p.g[i] * p.g[j];
  in.gan = view4(gan);
  in.mse = view4(mse);
  in.dtype = dg;
  return in;
}

// Calls fn.template operator()<T, C>() for the runtime dtype and channel count.
template <typename Fn>
void dispatch(DType dt, int c, Fn&& fn) {
  auto by_c = [&](auto tag) {
    using T = decltype(tag);
    if (c == 1) fn.template operator()<T, 1>();
    else fn.template operator()<T, 3>();
  };
  switch (dt) {
    case DType::kU8: by_c(uint8_t{}); break;
    case DType::kU16: by_c(uint16_t{}); break;
    case DType::kF32: by_c(float{}); break;
    case DType::kF64: by_c(double{}); break;
  }
}

template <typename T>
double load_fn(const char* ptr) { return load<T>(ptr); }

double (*loader_for(DType dt))(const char*) {
  switch (dt) {
    case DType::kU8: return &load_fn<uint8_t>;
    case DType::kU16: return &load_fn<uint16_t>;
    case DType::kF32: return &load_fn<float>;
    case DType::kF64: return &load_fn<double>;
  }
  return nullptr;
}

// Runs the kernel for one (dtype, C) with a fresh copy of `proto` as each chunk's sink.
template <typename Sink>
struct Runner {
  const Inputs& in;
  const Sink& proto;
  template <typename T, int C>
  void operator()() const {
    run_all<T, C>(in.p, in.gan, in.mse, [this] { return proto; });
  }
};

py::array_t<float> dmap_py(const py::array& gan, const py::array& mse, int window, double scale) {
  const Inputs in = validate(gan, mse, window, scale);
  py::array_t<float> out({static_cast<py::ssize_t>(in.p.n), static_cast<py::ssize_t>(in.p.hout),
                          static_cast<py::ssize_t>(in.p.wout)});
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    const DmapSink sink{dst, in.p.hout, in.p.wout};
    dispatch(in.dtype, in.p.c, Runner<DmapSink>{in, sink});
  }
  return out;
}

py::array_t<uint8_t> premask_py(const py::array& gan, const py::array& mse, const py::object& labels_obj,
                                const py::object& weights_obj, double threshold, int window, double scale) {
  const Inputs in = validate(gan, mse, window, scale);
  Labels3 labels;
  py::array labels_arr;
  if (!labels_obj.is_none()) {
    if (!py::isinstance<py::array>(labels_obj)) throw py::value_error("premask: labels must be a numpy uint8 array or None");
    labels_arr = py::reinterpret_borrow<py::array>(labels_obj);
    if (!labels_arr.dtype().equal(py::dtype::of<uint8_t>()))
      throw py::value_error("premask: labels must have dtype uint8, got " + py::str(labels_arr.dtype()).cast<std::string>());
    if (labels_arr.ndim() != 3 || labels_arr.shape(0) != in.p.n || labels_arr.shape(1) != in.p.h ||
        labels_arr.shape(2) != in.p.w)
      throw py::value_error("premask: labels must have shape (N, H, W) = (" + std::to_string(in.p.n) + ", " +
                            std::to_string(in.p.h) + ", " + std::to_string(in.p.w) + ")");
    labels = Labels3{static_cast<const char*>(labels_arr.data()), labels_arr.strides(0), labels_arr.strides(1),
                     labels_arr.strides(2)};
  }
  double weights[kNumClasses];
  std::fill(weights, weights + kNumClasses, 1.0);
  if (!weights_obj.is_none()) {
    // c_style: a contiguous, aligned copy whenever the caller's array is not one (a strided or
    // unaligned view, e.g. a field of a structured array, was read wrongly through at()).
    using WeightsArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
    WeightsArray w;
    try {
      w = WeightsArray::ensure(weights_obj);
    } catch (...) {
      w = WeightsArray();
    }
    if (!w || w.ndim() != 1 || w.shape(0) != kNumClasses)
      throw py::value_error("premask: weights must be a float64 array of shape (150,)");
    std::copy(w.data(), w.data() + kNumClasses, weights);
  } else if (labels.data) {
    throw py::value_error("premask: weights are required when labels are given");
  }
  py::array_t<uint8_t> out({static_cast<py::ssize_t>(in.p.n), static_cast<py::ssize_t>(in.p.hout),
                            static_cast<py::ssize_t>(in.p.wout)});
  std::atomic<int64_t> fallbacks{0};
  std::atomic<bool> bad_label{false};
  {
    py::gil_scoped_release nogil;
    PremaskSink proto{out.mutable_data(), in.p.hout, in.p.wout, labels, weights, threshold,
                      &in.gan, &in.mse, loader_for(in.dtype), &fallbacks, &bad_label};
    dispatch(in.dtype, in.p.c, Runner<PremaskSink>{in, proto});
  }
  g_fallback_pixels.fetch_add(fallbacks.load());
  if (bad_label.load()) throw py::value_error("premask: labels must be < 150 (ADE20K classes)");
  return out;
}

}  // namespace

void bind_dmap(py::module_& m) {
  m.def("dmap", &dmap_py, py::arg("gan"), py::arg("mse"), py::arg("window"), py::arg("scale"),
        R"doc(D map of a batch of image pairs.

gan, mse: (N, H, W, C) arrays, C in {1, 3}, H, W >= 11, same shape and dtype (uint8, uint16,
float32 or float64), any strides. Values used are element * scale (scale maps them to 0..255).
window: 0 = Gaussian 11x11 sigma 1.5, 1 = box 11x11.
Returns float32 (N, H-10, W-10) in (0, 1], within 1e-5 of the float64 reference.)doc");
  m.def("premask", &premask_py, py::arg("gan"), py::arg("mse"), py::arg("labels"), py::arg("weights"),
        py::arg("threshold"), py::arg("window"), py::arg("scale"),
        R"doc(Pre-morphology mask: clip(D * W[label], 0, 1) < threshold as uint8 0/1 (N, H-10, W-10).

labels: None (W = 1) or uint8 (N, H, W) ADE20K labels < 150 (read at the +5 offset of the valid
region); weights: float64 (150,). Decisions equal the float64 reference's: pixels whose float32
D*W lies within a rigorous error bound of the threshold are recomputed in float64.)doc");
  m.def("_premask_fallback_count", [](bool reset) {
        return reset ? g_fallback_pixels.exchange(0) : g_fallback_pixels.load();
      },
      py::arg("reset") = true,
      "Diagnostics: premask pixels decided by the float64 recomputation since the last reset.");
}

}  // namespace desra
