// desra_fast._C: one pybind11 module; each concern registers its own functions from its own file.
#include <pybind11/pybind11.h>

namespace desra {
void bind_threads(pybind11::module_& m);      // cpu/parallel.cpp: the CPU thread pool
void bind_cpu_isa(pybind11::module_& m);      // cpu/cpu_isa.cpp: which instruction set the CPU kernels use
void bind_dmap(pybind11::module_& m);         // cpu/dmap.cpp: D map and fused pre-morphology mask
void bind_postprocess(pybind11::module_& m);  // cpu/postprocess.cpp: erosion, dilation, holes, components
void bind_emulator(pybind11::module_& m);     // cpu/emulator.cpp: CUDA post-processing run on the CPU
void bind_cuda(pybind11::module_& m);         // cuda/*.cu, or cpu/cuda_absent.cpp without CUDA
}  // namespace desra

PYBIND11_MODULE(_C, m) {
  m.doc() = "desra_fast native kernels (CPU always; CUDA when built with DESRA_WITH_CUDA)";
  desra::bind_threads(m);
  desra::bind_cpu_isa(m);
  desra::bind_dmap(m);
  desra::bind_postprocess(m);
  desra::bind_emulator(m);
  desra::bind_cuda(m);
}
