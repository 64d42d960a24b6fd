// D map and fused pre-morphology mask on the CPU: validation, Python binding, the float64
// reference recomputation and the error bands. The kernels themselves are in dmap_kernels.inc,
// compiled once per instruction set (kernels_avx512.cpp, kernels_avx2.cpp, kernels_baseline.cpp)
// and chosen at run time (desra/cpu_isa.h).
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
//    or 14 rows of float32 x, s1, hv planes, and 5 or 4 output rows per vertical pass (AVX-512's
//    32 vector registers hold the 15 row values of a 5-row pass; 16 registers hold 14). Both
//    11-tap passes sum symmetric tap pairs (g_b = g_{10-b}): on these cores the FMA units are
//    the bound, and a pair costs one addition and one multiply-add instead of two multiply-adds.
//  * Input dtype (uint8/uint16/float32/float64) and C (1, 3) are template parameters; any byte
//    strides are read directly (no copies); a row whose pixels are packed (stride W = C*itemsize,
//    stride C = itemsize) takes a flat conversion loop (intrinsics for uint8: the common
//    contiguous NHWC case) and the next row segment is prefetched.
//

// float32 path (uint8/uint16 inputs; twice the SIMD lanes of float64). E[x^2] - mu^2 is never
// formed: as in the Triton kernel (kernels/stage1.py), every moment is taken about a pixel of the
// window itself, so every rounding error is proportional to the local variance, not to the
// intensity level. For an output pixel with window rows a and columns b (taps g, centre tap 5):
//   d_ab = x_ab - x_a5 (row centred on its own centre-column pixel; exact for integers < 2^24),
//   s1_a = sum_b g_b d_ab,   hv_a = sum_b g_b d_ab^2 - s1_a^2          (horizontal, per input row)
//   t_a = (x_a5 - x_ref) + s1_a  (row mean relative to a reference pixel of the window: the
//         centre-column pixel of a row at most kMaxRefOffset = 2 rows from the window's centre
//         row, shared by the 4 output rows of one vertical pass), e_a = hv_a + t_a^2,
//   var = [ sum_a g_a e_a - (sum_a g_a t_a)^2 ] * scale^2                        (vertical)
// which is exactly the window variance (within-row plus between-row parts, law of total
// variance). Raw element values are used (exact in float32) and scale^2 is applied at the end.
// Error bound (u = 2^-24, gamma_k = k u / (1 - k u); v = exact variance in raw units; the taps are
// rounded to float32, one more relative rounding per product; FMA or not, and summed in symmetric
// pairs or not, each term below sees at most the rounding counts used: a horizontal pair adds
// d_b + d_{10-b} exactly and rounds d_b^2 + d_{10-b}^2 at most twice, then 5 accumulations; a
// vertical pair rounds t_a + t_{10-a} (or e_a + e_{10-a}) once, then 6 terms are accumulated):
//   Structure (g5 = centre tap, wref = g5 * g[5 - 2] the smallest weight a reference pixel can
//   have; exact weights sum to 1): the row variance h_a about the row mean satisfies
//   h_a >= g5 m_a^2 (m_a = exact s1_a: the centre term alone), so the row second moment
//   s_a = h_a + m_a^2 <= (1 + 1/g5) h_a and S = sum_a g_a s_a <= kS v, kS = 1 + 1/g5. Likewise
//   A = sum_a g_a tau_a^2 (tau_a exact t_a) = B + T^2 with B the between-row part <= v and
//   T = mu - x_ref, T^2 <= v / wref (the reference pixel's own term), so A <= kA v, kA = 1 + 1/wref.
//   (1) |s1^ - m| <= gamma_11 sum g|d| <= gamma_11 sqrt(s) (Cauchy-Schwarz); the squares' sum
//       <= gamma_12 s; hence |hv^ - h| <= eh s, eh = (gamma_12 + 2 gamma_11 + gamma_11^2 + 2u) / (1 - u)
//       (|m| <= sqrt(s)).
//   (2) |t^_a - tau_a| <= delta_a = (1 + u) gamma_11 sqrt(s_a) + u |tau_a|;
//       |T1^ - T| <= c1 sqrt(v), c1 = (1 + gamma_12)((1 + u) gamma_11 sqrt(kS) + u sqrt(kA)) + gamma_12 sqrt(kA).
//   (3) with D2 = sum g delta^2 <= (2 (1+u)^2 gamma_11^2 kS + 2 u^2 kA) v, the e_a err in sum by
//       <= ee v, ee = eh kS + 2 sqrt(D2 kA) + D2, plus their roundings (t^2, the sum; without FMA):
//       ee1 = ee + 2u (1 + kA + ee);
//       the accumulation (gamma_12, terms summing to <= (1 + kA + ee1) v): cE = ee1 + gamma_12 (1 + kA + ee1).
//   (4) |T1^2 - T^2| (+ the square's rounding) <= cT v, cT = c1 (2 sqrt(kA) + c1) + u (sqrt(kA) + c1)^2.
//   (5) the subtraction (cS = cE + cT + u (1 + cE + cT)), scale^2 rounded to float32 and the
//       product: rho' = cS (1 + gamma_2) + gamma_2.
//   So |var32 - var| <= rho'/(1 - rho') var32; var_rel_bound32 doubles it (rho) to cover the
//   float64 taps' and the reference window's own last-bit differences. A flat window gives 0
//   exactly, and var32 >= 0 whenever the bound holds. Gaussian: rho ~ 2.8e-4, box: ~9.0e-4 (_C._var_rel_bound32).
//   D error: on the segment between var and var32 every point xi satisfies |var32 - var| <=
//   rho/(1 - rho) xi, and xi |dD_c/dxi| <= max(sx sy / M, N xi / M^2) <= 1 + 2e-8/C, so per
//   channel (two variances) |D_c(var32) - D_c(var)| <= 2 rho / (1 - rho) (1 + 1e-9), and so is the
//   channel mean. band32 = that + the reference's own error (2 * 653.7 * kRefVarErr * b^2, b =
//   255 on the 0..255 scale, see (2)-(3) below) + kEvalErr32 (the float32 formula). For the D map
//   output the realised error is ~1e-6 (the bound is a worst case).
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

double var_rel_bound32(int window) {
  double g[kTaps];
  window_taps(window, g);
  const double u = kUnit32;
  auto gamma = [u](double k) { return k * u / (1.0 - k * u); };
  const double g5 = g[kHalo], wref = g5 * g[kHalo - kMaxRefOffset];
  const double ks = 1.0 + 1.0 / g5, ka = 1.0 + 1.0 / wref, ra = std::sqrt(ka);
  const double g11 = gamma(11), g12 = gamma(12), g2 = gamma(2);
  const double eh = (g12 + 2 * g11 + g11 * g11 + 2 * u) / (1 - u);                          // (1)
  const double c1 = (1 + g12) * ((1 + u) * g11 * std::sqrt(ks) + u * ra) + g12 * ra;         // (2)
  const double d2 = 2 * (1 + u) * (1 + u) * g11 * g11 * ks + 2 * u * u * ka;
  const double ee = eh * ks + 2 * std::sqrt(d2 * ka) + d2;                                   // (3)
  const double ee1 = ee + 2 * u * (1 + ka + ee);  // t^2 and the sum rounded (one with FMA)
  const double ce = ee1 + g12 * (1 + ka + ee1);
  const double ct = c1 * (2 * ra + c1) + u * (ra + c1) * (ra + c1);                          // (4)
  const double cs = ce + ct + u * (1 + ce + ct);
  const double rho1 = cs * (1 + g2) + g2;                                                    // (5)
  return 2.0 * rho1 / (1.0 - rho1);
}

double error_band32(const Problem& p, DType dtype) {
  const double rho = var_rel_bound32(p.window);
  const double top = dtype == DType::kU8 ? 255.0 : 65535.0;
  const double b = top * p.scale;  // largest value on the scaled axis
  return 2.0 * rho / (1.0 - rho) * (1 + 1e-9) + 2.0 * kMaxVarSensitivity * kRefVarErr * b * b + kEvalErr32;
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
  double sum = 0;
  for (int c = 0; c < p.c; ++c) {
    double var[2];
    const Image4* im[2] = {&mse, &gan};
    for (int k = 0; k < 2; ++k) {
      double mu = 0, m2 = 0;
      for (int i = 0; i < kTaps; ++i)
        for (int j = 0; j < kTaps; ++j) {
          const double v = load_elem<T>(im[k]->at(n, o + i, x + j, c)) * p.scale;
          mu += p.w2[i][j] * v;
          m2 += p.w2[i][j] * (v * v);
        }
      var[k] = m2 - mu * mu;
    }
    sum += channel_d64(var[0], var[1]);
  }
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
                  const py::object& weights_obj, double threshold, int window, double scale,
                  const std::function<uint8_t*(int64_t, int64_t, int64_t)>& alloc) {
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
  uint8_t* out = alloc(in.p.n, in.p.hout, in.p.wout);
  std::atomic<int64_t> fallbacks{0};
  std::atomic<bool> bad_label{false};
  {
    py::gil_scoped_release nogil;
    cpu_kernels().premask(PremaskCall{in.p, in.gan, in.mse, in.dtype, out, labels, weights, threshold, &fallbacks,
                                      &bad_label});
  }
  g_fallback_pixels.fetch_add(fallbacks.load());
  if (bad_label.load()) throw py::value_error("premask: labels must be < 150 (ADE20K classes)");
}

namespace {

py::array_t<uint8_t> premask_py(const py::array& gan, const py::array& mse, const py::object& labels_obj,
                                const py::object& weights_obj, double threshold, int window, double scale) {
  py::array_t<uint8_t> out;
  premask_into(gan, mse, labels_obj, weights_obj, threshold, window, scale, [&](int64_t n, int64_t h, int64_t w) {
    out = py::array_t<uint8_t>({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(h), static_cast<py::ssize_t>(w)});
    return out.mutable_data();
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
  m.def("_premask_fallback_count", [](bool reset) {
        return reset ? g_fallback_pixels.exchange(0) : g_fallback_pixels.load();
      },
      py::arg("reset") = true,
      "Diagnostics: premask pixels decided by the float64 recomputation since the last reset.");
  m.def("_var_rel_bound32", &var_rel_bound32, py::arg("window"),
        "Relative variance error bound rho of the float32 path (|var32 - var| <= rho * var32).");
}

}  // namespace desra
