// Types shared by the D-map front end (csrc/cpu/dmap.cpp: validation, Python binding, the float64
// reference recomputation) and the per-instruction-set kernels (csrc/cpu/dmap_kernels.inc,
// compiled once per ISA by csrc/cpu/kernels_*.cpp).
//
// Everything defined here is compiled for the module's baseline target: the kernels include this
// header before they switch the target, so these inline functions never carry AVX code outside
// the per-ISA namespaces (see cpu_isa.h).
#pragma once

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "desra/dmap_math.h"
#include "desra/hd.h"

namespace desra {

constexpr double kCentre = 127.5;  // centre of the 0..255 scale: |v - kCentre| <= 127.5 in range

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

enum class DType { kU8, kU16, kF32, kF64 };

struct Problem {
  int n, h, w, c, hout, wout;
  int window;                // kWindowGaussian or kWindowBox
  double scale;
  double g[kTaps];           // separable taps of the fast paths
  double w2[kTaps][kTaps];   // the reference's 2-D window (np.outer(k, k), or 1/121)
};

// Bound inputs of the float64 path's error band: a = max |v - kCentre|, b = max |v| over the
// values read.
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

// |D32 - D64 reference| bound of the float64-moment path for values within `r` (dmap.cpp).
double error_band(const Range& r);
// Offset subtracted from the raw values of the float32 path (the middle of the dtype's range): the
// row means m stored in its ring then have at most half the magnitude, and so half the rounding.
template <typename T>
constexpr float kOffset32 = static_cast<float>((std::numeric_limits<T>::max() + 1) / 2);

// |D32 - D64 reference| bound of the float32 path (integer inputs, dmap.cpp "float32 path").
double error_band32(const Problem& p, DType dtype);
// The float32 path's variance error on the 0..255 scale: |var32 - var| <= rel var + abs1 sqrt(var) + abs0.
struct VarBound32 {
  double rel, abs1, abs0;
};
VarBound32 var_bound32(int window, DType dtype, double scale);

// D at output (o, x) of image n recomputed in float64 exactly as the released script. Compiled
// once, for the baseline target, so every ISA path decides a near-threshold pixel identically.
double reference_pixel_d(const Problem& p, const Image4& gan, const Image4& mse, int n, int o, int x, DType dtype);

// clip(x, 0, 1) < threshold with numpy's NaN semantics (NaN stays NaN, NaN < t is false).
inline bool below(double x, double threshold) {
  if (x != x) return false;
  x = x < 0 ? 0 : (x > 1 ? 1 : x);
  return x < threshold;
}

// The pre-mask's decision clip(D * w, 0, 1) < t as a comparison of D alone: it holds exactly when
// D < class_threshold(w, t), for every finite D >= 0 whose distance to t / w exceeds the
// comparison slack below (closer pixels are decided in float64 anyway). +inf / -inf / NaN for
// weights whose decision does not depend on D (w <= 0, w = +inf, NaN, or t outside (0, 1]); those
// pixels are never within the band (|D - T| is inf or NaN).
inline float class_threshold(double w, double t) {
  const float inf = std::numeric_limits<float>::infinity();
  if (w != w || t != t) return std::numeric_limits<float>::quiet_NaN();  // D * NaN < t is false
  if (w <= 0) return t > 0 ? inf : -inf;        // D * w <= 0 (D >= 0): clip gives 0
  if (w == std::numeric_limits<double>::infinity()) return t > 1 ? inf : -inf;  // clip gives 1
  if (t > 1) return inf;                        // clip(.) <= 1 < t
  if (t <= 0) return -inf;                      // clip(.) >= 0 >= t
  const double q = t / w;                       // D * w < t  <=>  D < t / w  (w > 0, 0 < t <= 1)
  return q > std::numeric_limits<float>::max() ? inf : static_cast<float>(q);
}

// Float32 slack for |D - T| of a band in D: covers T's rounding to float32 (<= 2^-24 |T|, and only
// |T| <= 2 matters: D <= 1 + 1e-9 lies farther from a larger T than any band), the float32
// subtraction and the float64 criterion's own ulp terms. Rounded up to a float.
inline float comparison_slack(double band) {
  const double s = band * (1 + 1e-6) + 0x1p-21;
  float f = static_cast<float>(s);
  if (static_cast<double>(f) < s) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

// The arguments of one dispatched kernel call (validated by dmap.cpp).
struct DmapCall {
  Problem p;
  Image4 gan, mse;
  DType dtype;
  float* out;  // C-contiguous (N, hout, wout)
};

// Where a pre-mask goes: bytes 0/1, C-contiguous (N, hout, wout); or bits in the BitImage layout
// (bitmask_cpu.h): row (n, y) at words + (n * hout + y) * nw, pixel x = bit x % 64 of word x / 64,
// the bits past wout zero.
struct PremaskOut {
  uint8_t* bytes = nullptr;
  uint64_t* words = nullptr;
  int64_t nw = 0;
};

struct PremaskCall {
  Problem p;
  Image4 gan, mse;
  DType dtype;
  PremaskOut out;
  Labels3 labels;
  const double* weights;   // kNumClasses entries
  double threshold;
  const float* class_t;    // kNumClasses entries: class_threshold(weights[k], threshold)
  float nolabel_t;         // class_threshold(1, threshold), used without labels
  std::atomic<int64_t>* fallbacks;  // pixels decided by the float64 recomputation
  std::atomic<bool>* bad_label;     // some label >= kNumClasses
  std::atomic<int64_t>* evaluated;  // += pixels whose D was computed (screening included)
  // The caller only uses the pre-mask's erosion by kErodeRadius (the fused detect): pixels that
  // no kept pixel's window contains may be left 0 (csrc/cpu/premask_eroded_kernels.inc).
  bool eroded_only = false;
};

}  // namespace desra
