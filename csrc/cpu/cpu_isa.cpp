// Runtime selection of the per-ISA kernel copies (desra/cpu_isa.h) and desra_fast._C.cpu_info().
#include "desra/cpu_isa.h"

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cstdlib>
#include <stdexcept>
#include <string>

namespace desra {

extern const CpuKernels kKernelsBaseline;
#if defined(__x86_64__) || defined(_M_X64)
extern const CpuKernels kKernelsAvx512;
extern const CpuKernels kKernelsAvx2;
#endif

namespace {

struct Entry {
  const CpuKernels* kernels;
  bool (*runnable)();
  const char* requires_;  // what the CPU must report, in words (for the error message)
};

#if defined(__x86_64__) || defined(_M_X64)
// __builtin_cpu_supports reads cpuid once (libgcc) and, for AVX / AVX-512, also checks with
// xgetbv that the OS saves the ymm / zmm register state.
bool has_avx512() {
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
         __builtin_cpu_supports("popcnt") && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
}
bool has_avx2() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("popcnt");
}
#endif
bool always() { return true; }

// DESRA_CPU_DISABLE=name[,name...]: copies treated as not runnable (e.g. to keep AVX-512 off on
// CPUs that lower their clock for it). Read once.
bool disabled(const char* name) {
  static const std::string list = [] {
    const char* env = std::getenv("DESRA_CPU_DISABLE");
    return "," + std::string(env ? env : "") + ",";
  }();
  return list.find("," + std::string(name) + ",") != std::string::npos;
}

// Best first.
const Entry kEntries[] = {
#if defined(__x86_64__) || defined(_M_X64)
    {&kKernelsAvx512, &has_avx512, "AVX-512 F/BW/VL, AVX2, FMA, POPCNT, BMI1/2"},
    {&kKernelsAvx2, &has_avx2, "AVX2, FMA, POPCNT"},
#endif
    {&kKernelsBaseline, &always, "nothing beyond the baseline"},
};

bool runnable(const Entry& e) { return e.kernels == &kKernelsBaseline || (e.runnable() && !disabled(e.kernels->name)); }

const CpuKernels* best() {
  for (const Entry& e : kEntries)
    if (runnable(e)) return e.kernels;
  return &kKernelsBaseline;
}

std::atomic<const CpuKernels*> g_active{nullptr};

}  // namespace

const CpuKernels& cpu_kernels() {
  const CpuKernels* k = g_active.load(std::memory_order_acquire);
  if (!k) {
    k = best();
    g_active.store(k, std::memory_order_release);
  }
  return *k;
}

std::vector<std::string> available_isas() {
  std::vector<std::string> out;
  for (const Entry& e : kEntries)
    if (runnable(e)) out.emplace_back(e.kernels->name);
  return out;
}

std::vector<std::string> compiled_isas() {
  std::vector<std::string> out;
  for (const Entry& e : kEntries) out.emplace_back(e.kernels->name);
  return out;
}

void select_isa(const std::string& name) {
  if (name == "auto") {
    g_active.store(best(), std::memory_order_release);
    return;
  }
  for (const Entry& e : kEntries) {
    if (name != e.kernels->name) continue;
    if (!runnable(e))
      throw std::runtime_error("CPU kernels '" + name + "' cannot run on this CPU (" +
                               (e.runnable() ? std::string("disabled by DESRA_CPU_DISABLE")
                                             : "it needs " + std::string(e.requires_)) +
                               "); this CPU can run: " + [] {
                                 std::string s;
                                 for (const auto& n : available_isas()) s += (s.empty() ? "" : ", ") + n;
                                 return s;
                               }());
    g_active.store(e.kernels, std::memory_order_release);
    return;
  }
  std::string known = "auto";
  for (const auto& n : compiled_isas()) known += ", " + n;
  throw std::invalid_argument("unknown CPU kernels '" + name + "' (expected one of: " + known + ")");
}

void bind_cpu_isa(pybind11::module_& m) {
  namespace py = pybind11;
  cpu_kernels();  // select the best copy now, before any kernel runs
  m.def("cpu_isa", [] { return std::string(cpu_kernels().name); }, "Name of the CPU kernel copy in use.");
  m.def("cpu_isas_available", &available_isas, "CPU kernel copies this CPU can run, best first.");
  m.def("cpu_isas_compiled", &compiled_isas, "CPU kernel copies compiled into this module, best first.");
  m.def("_set_cpu_isa", [](const std::string& name) {
        try {
          select_isa(name);
        } catch (const std::invalid_argument& e) {
          throw py::value_error(e.what());
        }
        return std::string(cpu_kernels().name);
      }, py::arg("name"),
      "Select the CPU kernel copy ('auto' = best available). ValueError for an unknown name, "
      "RuntimeError for one this CPU cannot run. Not thread-safe against running kernels.");
#if defined(DESRA_NATIVE_BUILD)
  m.attr("built_native") = true;
#else
  m.attr("built_native") = false;
#endif
}

}  // namespace desra
