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
// |D32 - D64 reference| bound of the float32 path (integer inputs, dmap.cpp "float32 path").
double error_band32(const Problem& p, DType dtype);
// Relative bound rho of the float32 path's variance: |var32 - var| <= rho * var32.
double var_rel_bound32(int window);

// D at output (o, x) of image n recomputed in float64 exactly as the released script. Compiled
// once, for the baseline target, so every ISA path decides a near-threshold pixel identically.
double reference_pixel_d(const Problem& p, const Image4& gan, const Image4& mse, int n, int o, int x, DType dtype);

// clip(x, 0, 1) < threshold with numpy's NaN semantics (NaN stays NaN, NaN < t is false).
inline bool below(double x, double threshold) {
  if (x != x) return false;
  x = x < 0 ? 0 : (x > 1 ? 1 : x);
  return x < threshold;
}

// The arguments of one dispatched kernel call (validated by dmap.cpp).
struct DmapCall {
  Problem p;
  Image4 gan, mse;
  DType dtype;
  float* out;  // C-contiguous (N, hout, wout)
};

struct PremaskCall {
  Problem p;
  Image4 gan, mse;
  DType dtype;
  uint8_t* out;            // C-contiguous (N, hout, wout)
  Labels3 labels;
  const double* weights;   // kNumClasses entries
  double threshold;
  std::atomic<int64_t>* fallbacks;  // pixels decided by the float64 recomputation
  std::atomic<bool>* bad_label;     // some label >= kNumClasses
};

}  // namespace desra
