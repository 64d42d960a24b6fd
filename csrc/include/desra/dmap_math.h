// The D-map arithmetic shared by every backend: window taps, the per-channel D formula and the
// constants of the float32 error bound that decides when a threshold decision must be redone in
// float64 (see the derivation in csrc/cpu/dmap.cpp, "Error bound").
#pragma once

#include <cmath>

#include "desra/hd.h"

namespace desra {

constexpr int kTaps = kWindow;          // 11 taps per separable pass
constexpr int kWindowGaussian = 0;      // dmap(window=0): cv2.getGaussianKernel(11, 1.5)
constexpr int kWindowBox = 1;           // dmap(window=1): plain mean, 1/121 per pixel (paper text)
constexpr float kCf = static_cast<float>(kC);
constexpr float kVarEpsf = static_cast<float>(kVarEps);

// The 11 one-dimensional taps of the window, in double. Gaussian: computed exactly as OpenCV's
// getGaussianKernel(11, 1.5) does (t_i = exp(-0.5/sigma^2 * x^2), then multiplied by 1/sum), so
// the separable product g_i*g_j equals the reference's np.outer(k, k) up to one rounding.
inline void window_taps(int window, double g[kTaps]) {
  if (window == kWindowBox) {
    for (int i = 0; i < kTaps; ++i) g[i] = 1.0 / kTaps;
    return;
  }
  const double scale2 = -0.5 / (kSigma * kSigma);
  double sum = 0;
  for (int i = 0; i < kTaps; ++i) {
    const double x = i - (kTaps - 1) * 0.5;
    g[i] = std::exp(scale2 * x * x);
    sum += g[i];
  }
  sum = 1.0 / sum;
  for (int i = 0; i < kTaps; ++i) g[i] *= sum;
}

// One channel's D from the two local variances, in float32 (the fast path). Variances are
// clamped at 0 first: a rounded E[x^2]-mu^2 can be slightly negative on flat regions and
// sqrt(negative + 1e-8) would be NaN. `v < 0 ? 0 : v` (not max) keeps a NaN input visible.
DESRA_HD float channel_d(float vx, float vy) {
  vx = vx < 0.f ? 0.f : vx;
  vy = vy < 0.f ? 0.f : vy;
  const float num = 2.f * sqrtf((vx + kVarEpsf) * (vy + kVarEpsf)) + kCf;
  return num / (vx + vy + kCf);
}

// The reference's formula in float64 (sqrt of each factor separately, as the released script).
DESRA_HD double channel_d64(double vx, double vy) {
  vx = vx < 0.0 ? 0.0 : vx;
  vy = vy < 0.0 ? 0.0 : vy;
  return (2.0 * sqrt(vx + kVarEps) * sqrt(vy + kVarEps) + kC) / (vx + vy + kC);
}

// ---- constants of the error bound (derivation in csrc/cpu/dmap.cpp) -----------------------
constexpr double kUnit64 = 1.1102230246251565e-16;  // 2^-53, float64 unit roundoff
constexpr double kUnit32 = 5.9604644775390625e-08;  // 2^-24, float32 unit roundoff
// max over vx, vy >= 0 of |dD_c/dvx|: sy/(sx*M) + N/M^2 <= 1/(2*sqrt(C)) * 1/sqrt(1e-8) + 1/C.
constexpr double kMaxVarSensitivity = 653.7;
// |computed var - exact var| <= kMainVarErr * a^2 for the separable float64 pass on values
// centred so that |v - centre| <= a (two 11-term FMA chains per moment, see dmap.cpp).
constexpr double kMainVarErr = 80 * kUnit64;
// Same for the direct 121-term float64 recomputation of uncentred values |v| <= b.
constexpr double kRefVarErr = 400 * kUnit64;
// float32 path: the rows of a vertical pass share a reference pixel at most this many rows from
// a window's centre row (its weight g5 * g[5 - offset] enters the error bound).
constexpr int kMaxRefOffset = 2;
// |D32 - D(exact f64 variances)| from the float32 evaluation of the formula and channel mean.
constexpr double kEvalErr32 = 24 * kUnit32;

}  // namespace desra
