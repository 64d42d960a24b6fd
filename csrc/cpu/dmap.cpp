// D map and fused pre-morphology mask on the CPU: validation, Python binding, the float64
// reference recomputation and the error bands. The kernels themselves are in dmap_kernels.inc,
// compiled once per instruction set (kernels_avx512.cpp, kernels_avx2.cpp, kernels_baseline.cpp)
// and chosen at run time (desra/cpu_isa.h).
//
//   dmap(gan, mse, window, scale)                                   -> float32 (N, H-10, W-10)
//   premask(gan, mse, labels, weights, threshold, window, scale)    -> uint8   (N, H-10, W-10)
//
// What is computed (docs/spec.md §1-3): per channel c, with x = scale*mse and y = scale*gan,
//   var_x = w*(x^2) - (w*x)^2 over an 11x11 window w (valid region only), same for y,
//   D_c = (2 sqrt(var_x+1e-8) sqrt(var_y+1e-8) + C) / (var_x + var_y + C),  D = mean_c D_c,
// and premask = clip(D * W[label], 0, 1) < threshold.
//
// Design: one fused pass, no full-size intermediate planes.
//  * Work items are (image, strip of output rows, band of column tiles); the desra::parallel_for
//    threads take them from a shared counter (about 16 per thread, for balance on shared cores:
//    a late or preempted thread then delays the call by one short item).
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
//    That is the float64-moment path (float32/float64 inputs); integer inputs (uint8, uint16)
//    take the float32 path below: column tiles of kTileCols32 (256) output pixels, a ring of 15
//    or 14 rows of float32 row-mean and row-variance planes (m, hv), and 5 or 4 output rows per
//    vertical pass (AVX-512's 32 vector registers hold the 15 row values of a 5-row pass; 16
//    registers hold 14); then one pass per output row for the D formula and channel mean. Both
//    11-tap passes sum symmetric tap pairs (g_b = g_{10-b}): on these cores the FMA units are
//    the bound, and a pair costs one addition and one multiply-add instead of two multiply-adds.
//  * Input dtype (uint8/uint16/float32/float64) and C (1, 3) are template parameters; any byte
//    strides are read directly (no copies); a row whose pixels are packed (stride W = C*itemsize,
//    stride C = itemsize) takes a flat conversion loop (intrinsics for uint8: the common
//    contiguous NHWC case) and the next row segment is prefetched.
//

// float32 path (uint8/uint16 inputs; twice the SIMD lanes of float64). E[x^2] - mu^2 is never
// formed: every second moment is taken about a value of the window itself, so the rounding errors
// follow the local variance, not the intensity level. Values are raw elements minus K, the middle
// of the dtype's range (K = 128 or 32768; x' = x - K is exact and |x'| <= K). For an output pixel
// with window rows a and columns b (taps g, centre tap 5):
//   d_ab = x'_ab - x'_a5 (row centred on its own centre-column pixel; exact),
//   s1_a = sum_b g_b d_ab,  hv_a = sum_b g_b d_ab^2 - s1_a^2,  m_a = x'_a5 + s1_a   (horizontal:
//         row variance about the row mean, and the row mean itself, rounded once; the ring keeps
//         m and hv, two planes),
//   t_a = m_a - m_ref (row means relative to the mean of a reference row: a window row at most
//         kMaxRefOffset = 2 rows from the window's centre, shared by the rows of one vertical
//         pass), e_a = hv_a + t_a^2,
//   var = [ sum_a g_a e_a - (sum_a g_a t_a)^2 ] * scale^2                        (vertical)
// which is exactly the window variance (within-row plus between-row parts, law of total
// variance); scale^2 is applied at the end (skipped when it is 1).
// Error bound (u = 2^-24, gamma_k = k u / (1 - k u); exact weights g summing to 1; v = exact
// variance in raw units = W + B, W = sum_a g_a h_a within rows, B = sum_a g_a (mu_a - mu)^2
// between rows, mu_a the exact row means; the taps are rounded to float32: one more relative
// rounding per product; FMA or not, and summed in symmetric pairs or not, each term sees at most
// the rounding counts used: a horizontal pair adds d_b + d_{10-b} exactly and rounds
// d_b^2 + d_{10-b}^2 at most twice, then 5 accumulations; a vertical pair rounds t_a + t_{10-a}
// (or e_a + e_{10-a}) once, then 6 terms are accumulated):
//   Structure: the row variance h_a satisfies h_a >= g5 s1_a^2 (the centre term alone), so the
//   row second moment s_a = h_a + s1_a^2 <= kS h_a and S = sum_a g_a s_a <= kS v, kS = 1 + 1/g5.
//   (H1) |s1^ - s1| <= gamma_11 sum_b g_b |d_b| <= gamma_11 sqrt(s) (Cauchy-Schwarz); the
//        squares' sum is within gamma_12 s, so |hv^ - h| <= eh s,
//        eh = (gamma_12 + 2 gamma_11 + gamma_11^2 + 2u) / (1 - u).
//   (H2) m^_a = mu_a + eta_a with |eta_a| <= (1 + u) gamma_11 sqrt(s_a) + u K (|mu_a| <= K).
//   Take the computed means mu~_a = m^_a as exact data: their between-row variance B~ and
//   V~ = W + B~ satisfy |V~ - v| = |B~ - B| <= 2 sqrt(v V_eta) + V_eta (Cauchy-Schwarz on the
//   covariance of mu and eta), V_eta = sum g eta^2 <= 2 (1+u)^2 gamma_11^2 kS v + 2 u^2 K^2. The
//   shift eta_ref that every t_a carries cancels: a variance does not see a common offset.
//   (V1) t^_a = fl(mu~_a - mu~_ref) is within u |t~_a| of the exact difference t~_a. With
//        T~ = mu~ - mu~_ref, T~^2 <= B~ / g_ref <= B~ / g3 (the reference row's own term; g3 =
//        g[5 - 2], the smallest weight a reference row has), so A~ = sum g t~^2 = B~ + T~^2 <=
//        kA B~, kA = 1 + 1/g3, and |T1^ - T~| <= c1 sqrt(kA B~), c1 = (1 + gamma_12) u + gamma_12.
//   (V2) e^_a = fl(t^_a^2 + hv^_a) (gamma_2): sum g |t^2 + hv^ - (t~^2 + h)| <= err_e =
//        u (2 + u) kA B~ + eh kS v; the accumulation adds gamma_12 (1 + gamma_2) + gamma_2 of
//        the magnitudes (<= v + kA B~ + err_e); |T1^2 - T~^2| plus the square's rounding <=
//        (c1 (2 + c1) + u (1 + c1)^2) kA B~; the final subtraction rounds once more (u), and
//        scale^2 (rounded to float32) and the product add gamma_2 when scale != 1.
//   Every magnitude is bounded by B~, V~ <= (sqrt(v) + sqrt(V_eta))^2, a polynomial in sqrt(v):
//   var_bound32 collects |var32 - V| <= rel V + abs1 sqrt(V) + abs0 (V = v scale^2, scaled
//   units) and doubles all three, to cover the float64 taps' and the reference window's own
//   last-bit differences. A flat window gives 0 exactly. Gaussian, uint8: rel ~ 8.1e-5,
//   abs1 ~ 4.3e-5, abs0 ~ 2.3e-10 (_C._var_bound32).
//   D error, per variance: split the error at a point v' with |v' - V| <= rel V (every xi between
//   V and v' has |v' - V| <= rel/(1 - rel) xi and xi |dD_c/dxi| <= 1 + 2e-8/C: at most
//   rel/(1 - rel) (1 + 1e-9)) and a rest Delta <= abs1 sqrt(V) + abs0, over which |dD_c/dxi| <=
//   sy/(sx M) + 1/M with sy/M <= 1/(2 sqrt(C - 1e-8)), sx >= sqrt(xi + 1e-8) and M >= xi + C:
//   if V (1 - rel) >= 4 Delta then xi >= 0.75 V (1 - rel) (the sqrt(V) terms stay bounded), else V
//   is below a small root and sx >= 1e-4 (error_band32 takes the larger case). Per channel: twice
//   that (two variances); the channel mean does not increase it. band32 = that + the reference's
//   own error (2 * 653.7 * kRefVarErr * b^2, b = 255 on the 0..255 scale, see (2)-(3) below) +
//   kEvalErr32 (the float32 formula). Gaussian, uint8: ~1.8e-4. For the D map output the
//   realised error is ~5e-7 (the bound is a worst case).
//
// float64-moment path (float32/float64 inputs, whose differences are not exact):
// Why float64 moments there: the hard case is a nearly flat MSE region (var_x ~ 0.01..1) next to a
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
//      u32; |v dD/dv| <= 1, so <= 2 u32 for both; the float32 path has none), +1e-8 (2 u32),
//      product (u32): 3 u32 in p, 1.5 u32 in sqrt(p). channel_d_est (AVX-512, AVX2), with E the
//      relative error of the hardware estimates (2^-14 for rsqrt14/rcp14, 1.5*2^-12 for rsqrt/rcp
//      in the Intel SDM; counted here for any E <= 2^-11, E^2 <= 4 u32):
//      s = p r = sqrt(p)(1 + e)(1 + d1), and the Newton step gives s (3 - r s) =
//      2 sqrt(p) (1 + d1/2 - 1.5 e^2 + O(e d1)): d1 costs 0.5 u32 and the step leaves
//      1.5 E^2 <= 6 u32; 3 - r s rounds once (t < 4: <= 1 u32) and s t + C once (u32), so
//      2 sqrt(p) + C is within 1.5 + 0.5 + 1 + 1 + 6 = 10 u32. den = (x + y) + C (2 u32). The
//      quotient: y0 = num q = (num / den)(1 + eta), |eta| <= E + u32; the Newton step leaves
//      eta (e' + d) <= (E + u32)^2 ~ 4 u32 and its FMA rounds once: 5.1 u32. Channel mean
//      ((d0+d1)+d2) fl(1/3) (<= 4 u32). In all <= 2 + 10 + 2 + 5.1 + 4 = 23.1 u32 (with the
//      documented E: AVX2 18.7 u32, AVX-512 13.2 u32; channel_d with sqrtf and a division: less).
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
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>

#include "desra/cpu_isa.h"
#include "desra/dmap_cpu.h"
#include "desra/dmap_math.h"
#include "desra/hd.h"

namespace py = pybind11;

namespace desra {

double error_band(const Range& r) {
  if (!(r.lo <= r.hi)) return 0.0;  // nothing read yet
  const double a = r.a(), b = r.b();
  return 2.0 * kMaxVarSensitivity * (kMainVarErr * a * a + kRefVarErr * b * b) + kEvalErr32;
}

namespace {

// a2 v + a1 sqrt(v) + a0: an error bound as a polynomial in sqrt(v) (coefficients >= 0).
struct SqrtPoly {
  double a2 = 0, a1 = 0, a0 = 0;
  SqrtPoly operator+(const SqrtPoly& o) const { return {a2 + o.a2, a1 + o.a1, a0 + o.a0}; }
  SqrtPoly operator*(double k) const { return {a2 * k, a1 * k, a0 * k}; }
  // Product of two polynomials of degree <= 1 in sqrt(v).
  SqrtPoly times(const SqrtPoly& o) const { return {a1 * o.a1, a1 * o.a0 + a0 * o.a1, a0 * o.a0}; }
};

}  // namespace

VarBound32 var_bound32(int window, DType dtype, double scale) {
  double g[kTaps];
  window_taps(window, g);
  const double u = kUnit32;
  auto gamma = [u](double k) { return k * u / (1.0 - k * u); };
  const double K = dtype == DType::kU8 ? kOffset32<uint8_t> : kOffset32<uint16_t>;  // |x - K| <= K
  const double g3 = std::min(g[kHalo - kMaxRefOffset], g[kHalo + kMaxRefOffset]);
  const double ks = 1.0 + 1.0 / g[kHalo], ka = 1.0 + 1.0 / g3;
  const double g11 = gamma(11), g12 = gamma(12), g2 = gamma(2);
  const double eh = (g12 + 2 * g11 + g11 * g11 + 2 * u) / (1 - u);                       // (H1)
  const SqrtPoly q{0, std::sqrt(2.0) * (1 + u) * g11 * std::sqrt(ks), std::sqrt(2.0) * u * K};  // sqrt(V_eta)
  const SqrtPoly b = SqrtPoly{0, 1, 0} + q;                                               // sqrt(B~), sqrt(V~)
  const SqrtPoly pb = b.times(b);
  const SqrtPoly dv = SqrtPoly{0, 2, 0}.times(q) + q.times(q);                            // |V~ - v|
  const double c1 = (1 + g12) * u + g12;                                                   // (V1)
  const SqrtPoly err_e = pb * (u * (2 + u) * ka) + SqrtPoly{eh * ks, 0, 0};                // (V2)
  const SqrtPoly mag = SqrtPoly{1, 0, 0} + pb * ka + err_e;
  const SqrtPoly err_v = mag * (g12 * (1 + g2) + g2) + err_e + pb * ((c1 * (2 + c1) + u * (1 + c1) * (1 + c1)) * ka);
  SqrtPoly raw = err_v + (pb + err_v) * u + dv;
  if (scale != 1.0) raw = raw * (1 + g2) + SqrtPoly{g2, 0, 0};
  // Raw units -> the scaled axis (V = v scale^2), doubled.
  return VarBound32{2 * raw.a2, 2 * raw.a1 * scale, 2 * raw.a0 * scale * scale};
}

double error_band32(const Problem& p, DType dtype) {
  const VarBound32 vb = var_bound32(p.window, dtype, p.scale);
  const double r = vb.rel, a = vb.abs1, c = vb.abs0;
  const double sens = 1.0 / (2.0 * std::sqrt(kC - kVarEps));  // max sy / M
  const double rel_part = r / (1 - r) * (1 + 1e-9);
  // V (1 - r) >= 4 Delta: xi >= 0.75 V (1 - r).
  const double big = sens * (a / std::sqrt(0.75 * (1 - r)) + std::sqrt(c / 3)) +
                     a / (2 * std::sqrt(0.75 * (1 - r) * kC)) + c / kC;
  // Otherwise sqrt(V) < smax, sx >= sqrt(1e-8), M >= C.
  const double smax = (4 * a + std::sqrt(16 * a * a + 16 * c * (1 - r))) / (2 * (1 - r));
  const double small = (a * smax + c) * (sens / std::sqrt(kVarEps) + 1 / kC);
  const double top = dtype == DType::kU8 ? 255.0 : 65535.0;
  const double bmax = top * p.scale;  // largest value on the scaled axis
  return 2.0 * (rel_part + std::max(big, small)) * (1 + 1e-9) + 2.0 * kMaxVarSensitivity * kRefVarErr * bmax * bmax +
         kEvalErr32;
}

namespace {

template <typename T>
double load_elem(const char* ptr) {
  T v;
  std::memcpy(&v, ptr, sizeof(T));
  return static_cast<double>(v);
}

template <typename T>
double reference_pixel_t(const Problem& p, const Image4& gan, const Image4& mse, int n, int o, int x) {
  // The 2 * C sums (mu, m2 per channel and image) are accumulated side by side, each in the same
  // order (i, j) as a sum on its own: the same results, but 4 * C independent chains instead of
  // one long dependent chain at a time (this recomputation is latency-bound).
  constexpr int kMaxSums = 2 * 3;
  const Image4* im[2] = {&mse, &gan};
  double mu[kMaxSums] = {}, m2[kMaxSums] = {};
  for (int i = 0; i < kTaps; ++i)
    for (int j = 0; j < kTaps; ++j) {
      const double w = p.w2[i][j];
      for (int c = 0; c < p.c; ++c)
        for (int k = 0; k < 2; ++k) {
          const double v = load_elem<T>(im[k]->at(n, o + i, x + j, c)) * p.scale;
          mu[2 * c + k] += w * v;
          m2[2 * c + k] += w * (v * v);
        }
    }
  double sum = 0;
  for (int c = 0; c < p.c; ++c)
    sum += channel_d64(m2[2 * c] - mu[2 * c] * mu[2 * c], m2[2 * c + 1] - mu[2 * c + 1] * mu[2 * c + 1]);
  return sum / p.c;
}

}  // namespace

// Direct 121-term sums of the scaled values and their squares, var = E[v^2] - E[v]^2, D_c,
// np.mean: the released script's float64 arithmetic.
double reference_pixel_d(const Problem& p, const Image4& gan, const Image4& mse, int n, int o, int x, DType dtype) {
  switch (dtype) {
    case DType::kU8: return reference_pixel_t<uint8_t>(p, gan, mse, n, o, x);
    case DType::kU16: return reference_pixel_t<uint16_t>(p, gan, mse, n, o, x);
    case DType::kF32: return reference_pixel_t<float>(p, gan, mse, n, o, x);
    case DType::kF64: return reference_pixel_t<double>(p, gan, mse, n, o, x);
  }
  return 0.0;
}

namespace {

std::atomic<int64_t> g_fallback_pixels{0};  // premask pixels decided in float64 (diagnostics)
std::atomic<int64_t> g_evaluated_pixels{0};  // premask pixels whose D was computed (diagnostics)

// ---------------------------------------------------------------------------------------------
// Python-facing validation and dispatch.


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
  p.window = window;
  window_taps(window, p.g);
  for (int i = 0; i < kTaps; ++i)
    for (int j = 0; j < kTaps; ++j) p.w2[i][j] = window == kWindowBox ? 1.0 / (kTaps * kTaps) : p.g[i] * p.g[j];
  in.gan = view4(gan);
  in.mse = view4(mse);
  in.dtype = dg;
  return in;
}

py::array_t<float> dmap_py(const py::array& gan, const py::array& mse, int window, double scale) {
  const Inputs in = validate(gan, mse, window, scale);
  py::array_t<float> out({static_cast<py::ssize_t>(in.p.n), static_cast<py::ssize_t>(in.p.hout),
                          static_cast<py::ssize_t>(in.p.wout)});
  float* dst = out.mutable_data();
  {
    py::gil_scoped_release nogil;
    cpu_kernels().dmap(DmapCall{in.p, in.gan, in.mse, in.dtype, dst});
  }
  return out;
}

}  // namespace

void premask_into(const py::array& gan, const py::array& mse, const py::object& labels_obj,
                  const py::object& weights_obj, double threshold, int window, double scale, bool eroded_only,
                  const std::function<PremaskOut(int64_t, int64_t, int64_t)>& alloc) {
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
  float class_t[kNumClasses];
  for (int k = 0; k < kNumClasses; ++k) class_t[k] = class_threshold(weights[k], threshold);
  const PremaskOut out = alloc(in.p.n, in.p.hout, in.p.wout);
  std::atomic<int64_t> fallbacks{0};
  std::atomic<bool> bad_label{false};
  {
    py::gil_scoped_release nogil;
    cpu_kernels().premask(PremaskCall{in.p, in.gan, in.mse, in.dtype, out, labels, weights, threshold, class_t,
                                      class_threshold(1.0, threshold), &fallbacks, &bad_label, &g_evaluated_pixels,
                                      eroded_only});
  }
  g_fallback_pixels.fetch_add(fallbacks.load());
  if (bad_label.load()) throw py::value_error("premask: labels must be < 150 (ADE20K classes)");
}

namespace {

py::array_t<uint8_t> premask_py(const py::array& gan, const py::array& mse, const py::object& labels_obj,
                                const py::object& weights_obj, double threshold, int window, double scale) {
  py::array_t<uint8_t> out;
  premask_into(gan, mse, labels_obj, weights_obj, threshold, window, scale, false, [&](int64_t n, int64_t h, int64_t w) {
    out = py::array_t<uint8_t>({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(h), static_cast<py::ssize_t>(w)});
    return PremaskOut{out.mutable_data()};
  });
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
  // A diagnostics counter's reader: its value, set back to 0 when `reset`.
  auto reader = [](std::atomic<int64_t>& c) { return [&c](bool reset) { return reset ? c.exchange(0) : c.load(); }; };
  m.def("_premask_fallback_count", reader(g_fallback_pixels), py::arg("reset") = true,
        "Diagnostics: premask pixels decided by the float64 recomputation since the last reset.");
  m.def("_premask_evaluated_count", reader(g_evaluated_pixels), py::arg("reset") = true,
        "Diagnostics: D evaluations of premask and detect since the last reset (pixels; detect's\n"
        "screening of every fifth row included, see csrc/cpu/premask_eroded_kernels.inc).");
  // The float32 path's integer dtypes by name, for the two diagnostics below.
  auto int_dtype = [](const std::string& name) { return name == "uint16" ? DType::kU16 : DType::kU8; };
  m.def("_var_bound32", [int_dtype](int window, const std::string& dtype, double scale) {
        const VarBound32 b = var_bound32(window, int_dtype(dtype), scale);
        return py::make_tuple(b.rel, b.abs1, b.abs0);
      },
      py::arg("window"), py::arg("dtype"), py::arg("scale"),
      "Variance error bound of the float32 path: |var32 - var| <= rel var + abs1 sqrt(var) + abs0\n"
      "(0..255 scale), for dtype 'uint8' or 'uint16'. -> (rel, abs1, abs0).");
  m.def("_error_band32", [int_dtype](int window, const std::string& dtype, double scale) {
        Problem p{};
        p.window = window;
        p.scale = scale;
        return error_band32(p, int_dtype(dtype));
      },
      py::arg("window"), py::arg("dtype"), py::arg("scale"),
      "|D32 - D64| bound of the float32 path (pixels within it of the threshold are redone in float64).");
}

}  // namespace desra
