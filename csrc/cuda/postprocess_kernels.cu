// CUDA post-processing of a batch of pre-morphology masks: erosion 5x5, dilation 13x13, hole
// filling, 8-connected components and the area filter -- 8 launches per batch, no host sync.
// Each __global__ is a thin wrapper: the bodies live in desra/postprocess_kernels.h as
// __host__ __device__ functions, which the CPU emulator (csrc/cpu/emulator.cpp) also runs.
// Costs and the reasons for this structure: csrc/CUDA_DESIGN.md.
#include <cuda_runtime.h>

#include <algorithm>
#include <string>

#include "desra/cuda_postprocess.h"
#include "desra/postprocess_kernels.h"

namespace desra {
namespace gpu {
namespace {

__device__ __forceinline__ ThreadIndex this_thread() {
  ThreadIndex t;
  t.block = {int(blockIdx.x), int(blockIdx.y), int(blockIdx.z)};
  t.thread = {int(threadIdx.x), int(threadIdx.y), int(threadIdx.z)};
  t.block_dim = {int(blockDim.x), int(blockDim.y), int(blockDim.z)};
  t.grid_dim = {int(gridDim.x), int(gridDim.y), int(gridDim.z)};
  return t;
}

__global__ void __launch_bounds__(kMorphThreads) morph_kernel(PostprocessArgs a) {
  __shared__ alignas(16) uint8_t smem[kMorphSmemBytes];
  const ThreadIndex t = this_thread();
  morph_load(t, a, smem);
  __syncthreads();
  morph_erode_rows(t, a, smem);
  __syncthreads();
  morph_erode_cols(t, a, smem);
  __syncthreads();
  morph_dilate_rows(t, a, smem);
  __syncthreads();
  morph_dilate_cols_store(t, a, smem);
}

__global__ void __launch_bounds__(kTileThreads) label_local_kernel(PostprocessArgs a, int mode) {
  __shared__ int32_t slab[kSlabSlots];
  const ThreadIndex t = this_thread();
  label_local_init(t, a, mode, slab);
  __syncthreads();
  LocalUnionProgram u = local_union_begin(t, a, mode);
  while (!local_union_step(u, a, mode, slab)) {
  }
  __syncthreads();
  label_local_store(t, a, mode, slab);
}

__global__ void __launch_bounds__(kMergeThreads) label_merge_kernel(PostprocessArgs a, int mode) {
  MergeProgram u = merge_begin(this_thread(), a, mode);
  while (!merge_step(u, a, mode)) {
  }
}

__global__ void __launch_bounds__(kPointThreads) fill_holes_kernel(PostprocessArgs a) {
  FindProgram f = fill_begin(this_thread(), a);
  while (!fill_step(f, a)) {
  }
}

__global__ void __launch_bounds__(kPointThreads) area_kernel(PostprocessArgs a) {
  FindProgram f = area_begin(this_thread(), a);
  while (!area_step(f, a)) {
  }
}

__global__ void __launch_bounds__(kPointThreads) output_kernel(PostprocessArgs a) {
  output_pixel(this_thread(), a);
}

dim3 to_dim3(const Dim3i& d) { return dim3(unsigned(d.x), unsigned(d.y), unsigned(d.z)); }

}  // namespace

std::string launch_postprocess(const PostprocessArgs& args, int device, void* stream_ptr) {
  if (args.n <= 0 || args.h <= 0 || args.w <= 0) return "";
  cudaError_t err = cudaSetDevice(device);
  if (err != cudaSuccess) return std::string("cudaSetDevice: ") + cudaGetErrorString(err);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  // gridDim.z is limited to 65535: launch the batch in chunks of images (pointer offsets only).
  constexpr int kMaxImagesPerLaunch = 65535;
  const int64_t image = int64_t(args.h) * args.w;
  for (int first = 0; first < args.n; first += kMaxImagesPerLaunch) {
    PostprocessArgs a = args;
    a.n = std::min(kMaxImagesPerLaunch, args.n - first);
    a.premask += first * image;
    a.mask += first * image;
    a.labels += first * image;
    a.area += first * image;
    a.counts += first;
    a.out += first * args.out_stride_n;
    const LaunchDims m = morph_dims(a.n, a.h, a.w), l = local_dims(a.n, a.h, a.w);
    const LaunchDims g = merge_dims(a.n, a.h, a.w), p = point_dims(a.n, a.h, a.w);
    morph_kernel<<<to_dim3(m.grid), to_dim3(m.block), 0, stream>>>(a);
    label_local_kernel<<<to_dim3(l.grid), to_dim3(l.block), 0, stream>>>(a, kLabelBackground);
    label_merge_kernel<<<to_dim3(g.grid), to_dim3(g.block), 0, stream>>>(a, kLabelBackground);
    fill_holes_kernel<<<to_dim3(p.grid), to_dim3(p.block), 0, stream>>>(a);
    label_local_kernel<<<to_dim3(l.grid), to_dim3(l.block), 0, stream>>>(a, kLabelForeground);
    label_merge_kernel<<<to_dim3(g.grid), to_dim3(g.block), 0, stream>>>(a, kLabelForeground);
    area_kernel<<<to_dim3(p.grid), to_dim3(p.block), 0, stream>>>(a);
    output_kernel<<<to_dim3(p.grid), to_dim3(p.block), 0, stream>>>(a);
    err = cudaGetLastError();  // launch-configuration errors only; does not wait for the GPU
    if (err != cudaSuccess) return std::string("CUDA post-processing launch failed: ") + cudaGetErrorString(err);
  }
  return "";
}

}  // namespace gpu
}  // namespace desra
