// Built only without DESRA_WITH_CUDA: the CUDA entry points report that this build has no CUDA.
#ifndef DESRA_WITH_CUDA
#include <pybind11/pybind11.h>
#include <string>
namespace desra {
void bind_cuda(pybind11::module_& m) {
  m.attr("built_with_cuda") = false;
  m.def("cuda_status", [] { return std::string("desra_fast was built without CUDA (DESRA_WITH_CUDA=OFF)"); });
  m.def("cuda_available", [] { return false; });
}
}  // namespace desra
#endif
