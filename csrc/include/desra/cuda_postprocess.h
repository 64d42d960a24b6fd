// Host-side entry of the CUDA post-processing (csrc/cuda/postprocess_kernels.cu). Only compiled
// with DESRA_WITH_CUDA; the Python launcher reaches it through csrc/cuda/cuda_bindings.cpp.
#pragma once

#include <string>

#include "desra/postprocess_kernels.h"

namespace desra {
namespace gpu {

// Enqueues the 8 post-processing launches for args.n images on `stream` (a cudaStream_t passed
// as void* so this header needs no CUDA include). Never synchronises. Returns "" on success, else
// the CUDA error text of a failed launch.
std::string launch_postprocess(const PostprocessArgs& args, int device, void* stream);

}  // namespace gpu
}  // namespace desra
