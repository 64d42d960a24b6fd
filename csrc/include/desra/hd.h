// Shared by the CPU and CUDA builds: `DESRA_HD` marks functions that run both in CUDA kernels
// (nvcc) and on the host (g++), so the CPU tests execute the very code the GPU kernels run.
#pragma once

#if defined(__CUDACC__)
#define DESRA_HD __host__ __device__ __forceinline__
#else
#define DESRA_HD inline
#endif

namespace desra {

// The constants of docs/spec.md (§1, §3).
constexpr int kWindow = 11;          // window side
constexpr int kHalo = kWindow / 2;   // 5: D exists only where the whole window is inside the image
constexpr double kC = (0.03 * 255.0) * (0.03 * 255.0);  // 58.5225, in numerator and denominator
constexpr double kVarEps = 1e-8;     // added under the square roots
constexpr double kSigma = 1.5;       // Gaussian window
constexpr int kErodeRadius = 2;      // 5x5 erosion, once
constexpr int kDilateRadius = 6;     // 5x5 dilation three times == one 13x13 on a rectangle
constexpr int kNumClasses = 150;     // ADE20K

}  // namespace desra
