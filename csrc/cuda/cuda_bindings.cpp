// Python bindings of the CUDA build (compiled by the host compiler, only with DESRA_WITH_CUDA;
// csrc/cpu/cuda_absent.cpp provides the same names without CUDA).
//
// The module links the CUDA runtime statically, so it imports on machines without a driver;
// every CUDA call happens inside a function, never at import. Device work takes raw pointers and
// a cudaStream_t as Python ints (torch's data_ptr() / current_stream().cuda_stream): a stream
// and device pointers are driver objects, valid across the two CUDA runtimes (ours, torch's).
#ifdef DESRA_WITH_CUDA
#include <cuda_runtime.h>
#include <pybind11/pybind11.h>

#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "desra/cuda_postprocess.h"
#include "desra/postprocess_kernels.h"

namespace py = pybind11;

namespace desra {
namespace {

// "" when a device is usable, else why not.
std::string unavailable_reason() {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // reset the last-error state so later runtime calls do not report it
    return "no CUDA device: cudaGetDeviceCount returned " + std::to_string(int(err)) + " (" +
           cudaGetErrorString(err) + ")";
  }
  if (count == 0) return "no CUDA device: cudaGetDeviceCount found 0 devices";
  return "";
}

std::string status() {
  const std::string reason = unavailable_reason();
  if (!reason.empty()) return reason;
  int count = 0;
  cudaGetDeviceCount(&count);
  cudaDeviceProp prop{};
  std::string first;
  if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess)
    first = "; device 0: " + std::string(prop.name) + " (sm_" + std::to_string(prop.major) +
            std::to_string(prop.minor) + ")";
  return "CUDA available: " + std::to_string(count) + " device(s)" + first +
         "; kernels compiled for sm_80 and sm_90 (+PTX)";
}

void check_dims(int64_t n, int64_t h, int64_t w) {
  if (n < 0 || h < 0 || w < 0) throw py::value_error("postprocess_cuda: negative shape");
  if (h * w >= (int64_t(1) << 31)) throw py::value_error("postprocess_cuda: an image must have fewer than 2^31 pixels");
  if (n > INT32_MAX) throw py::value_error("postprocess_cuda: batch too large");
}

}  // namespace

void bind_cuda(py::module_& m) {
  m.attr("built_with_cuda") = true;
  m.def("cuda_available", [] { return unavailable_reason().empty(); },
        "True when a CUDA device is usable (the driver answers and reports >= 1 device).");
  m.def("cuda_status", &status, "Why CUDA is (not) usable, in words.");
  m.def(
      "postprocess_cuda_workspace_bytes",
      [](int64_t n, int64_t h, int64_t w) {
        check_dims(n, h, w);
        return gpu::workspace_layout(int(n), int(h), int(w)).total;
      },
      py::arg("n"), py::arg("h"), py::arg("w"),
      "Bytes of device workspace postprocess_cuda_launch needs for n images of h x w (mask byte, int32\n"
      "label and int32 area per pixel, 8 bytes per image).");
  m.def(
      "postprocess_cuda_launch",
      [](int device, uintptr_t premask, uintptr_t workspace, int64_t workspace_bytes, uintptr_t out,
         int64_t out_stride_n, int64_t out_stride_y, int64_t out_stride_x, uintptr_t counts, int64_t n, int64_t h,
         int64_t w, int64_t area_threshold, uintptr_t stream) {
        check_dims(n, h, w);
        if (area_threshold < INT32_MIN || area_threshold > INT32_MAX)
          throw py::value_error("postprocess_cuda: area_threshold out of int32 range");
        const gpu::WorkspaceLayout l = gpu::workspace_layout(int(n), int(h), int(w));
        if (workspace_bytes < l.total)
          throw py::value_error("postprocess_cuda: workspace of " + std::to_string(workspace_bytes) +
                                " bytes, need " + std::to_string(l.total));
        if (n * h * w == 0) return;
        if (!premask || !workspace || !out) throw py::value_error("postprocess_cuda: null device pointer");
        auto* base = reinterpret_cast<uint8_t*>(workspace);
        gpu::PostprocessArgs a{};
        a.premask = reinterpret_cast<const uint8_t*>(premask);
        a.mask = base + l.mask;
        a.labels = reinterpret_cast<int32_t*>(base + l.labels);
        a.area = reinterpret_cast<int32_t*>(base + l.area);
        a.counts = counts ? reinterpret_cast<unsigned long long*>(counts)
                          : reinterpret_cast<unsigned long long*>(base + l.counts);
        a.out = reinterpret_cast<uint8_t*>(out);
        a.out_stride_n = out_stride_n;
        a.out_stride_y = out_stride_y;
        a.out_stride_x = out_stride_x;
        a.n = int(n);
        a.h = int(h);
        a.w = int(w);
        a.area_threshold = int(area_threshold);
        a.fault = gpu::kFaultNone;
        std::string err;
        {
          py::gil_scoped_release release;
          err = gpu::launch_postprocess(a, device, reinterpret_cast<void*>(stream));
        }
        if (!err.empty()) throw std::runtime_error(err);
      },
      py::arg("device"), py::arg("premask"), py::arg("workspace"), py::arg("workspace_bytes"), py::arg("out"),
      py::arg("out_stride_n"), py::arg("out_stride_y"), py::arg("out_stride_x"), py::arg("counts"), py::arg("n"),
      py::arg("h"), py::arg("w"), py::arg("area_threshold"), py::arg("stream"),
      "Enqueues the 8 post-processing kernels on `stream` (no synchronisation). Pointers are device\n"
      "addresses as ints: premask uint8 (n, h, w) contiguous; out 1-byte (n, h, w) with element strides;\n"
      "counts int64 (n,) or 0 (use workspace scratch). Use desra_fast.cuda_postprocess, not this.");
}

}  // namespace desra
#endif  // DESRA_WITH_CUDA
