// CPU emulator of the CUDA post-processing (csrc/cuda/postprocess_kernels.cu).
//
// It runs the kernels' own __host__ __device__ bodies (desra/postprocess_kernels.h) over the same
// grids the .cu launcher uses, with blocks and threads as loops. With a seed it searches for
// execution-order bugs the way a GPU could expose them:
//  * the blocks of every launch run in a seeded random order;
//  * the threads of a block run each barrier-separated phase in a random order;
//  * union-find work (the `*Program` state machines, one root-walk hop or atomic link per step) is
//    interleaved step by step: the next step is taken by a random unfinished thread of the block
//    (local labelling, which synchronises through shared memory) or of the whole launch (global
//    phases: merge, fill, area), so concurrent unions really race on the parent array.
// Without a seed (seed < 0) everything runs in launch order, one thread to completion at a time.
// Single-threaded and deterministic for a given seed, so a failure reproduces exactly.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "desra/postprocess_kernels.h"

namespace py = pybind11;

namespace desra {
namespace {

using gpu::Dim3i;
using gpu::LaunchDims;
using gpu::PostprocessArgs;
using gpu::ThreadIndex;

// splitmix64: small, fast, and identical on every platform (std:: distributions are not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t next() {
    uint64_t z = (s_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) for n < 2^32 by multiply-shift (Lemire), no division on the hot path.
  size_t below(size_t n) { return size_t(((next() >> 32) * uint64_t(n)) >> 32); }

 private:
  uint64_t s_;
};

class GridEmulator {
 public:
  explicit GridEmulator(int64_t seed) : shuffled_(seed >= 0), rng_(uint64_t(seed)) {}

  // Phased kernel: every block runs phase 0 for all its threads, then phase 1, ... (a
  // __syncthreads() between phases). Phase functions: void(const ThreadIndex&, uint8_t* smem).
  template <class... Phases>
  void run_phased(const LaunchDims& d, size_t smem_bytes, Phases... phases) {
    std::vector<uint8_t> smem(smem_bytes);
    for (const Dim3i& b : blocks(d)) {
      // Garbage, not zeros, so a kernel that reads shared memory it never wrote fails.
      for (auto& byte : smem) byte = uint8_t(rng_.next());
      (run_phase(d, b, smem.data(), phases), ...);
    }
  }

  // Kernel that is one union-find program per thread, with no barrier: the programs of ALL
  // threads of the launch are interleaved. begin: Program(const ThreadIndex&); step: bool(Program&).
  template <class Begin, class Step>
  void run_interleaved(const LaunchDims& d, Begin begin, Step step) {
    using Program = decltype(begin(std::declval<ThreadIndex>()));
    std::vector<Program> programs;
    for (const Dim3i& b : blocks(d))
      for (const Dim3i& t : threads(d)) programs.push_back(begin(ThreadIndex{b, t, d.block, d.grid}));
    interleave(programs, step);
  }

  // The local-labelling kernel: phase init, barrier, per-thread union program (interleaved within
  // the block), barrier, phase store.
  template <class Init, class Begin, class Step, class Store>
  void run_local_labelling(const LaunchDims& d, Init init, Begin begin, Step step, Store store) {
    std::vector<int32_t> slab(gpu::kSlabSlots);
    using Program = decltype(begin(std::declval<ThreadIndex>()));
    std::vector<Program> programs;
    for (const Dim3i& b : blocks(d)) {
      for (auto& v : slab) v = int32_t(rng_.next());  // garbage, as on the device
      const std::vector<Dim3i> order = threads(d);
      for (const Dim3i& t : order) init(ThreadIndex{b, t, d.block, d.grid}, slab.data());
      programs.clear();
      for (const Dim3i& t : order) programs.push_back(begin(ThreadIndex{b, t, d.block, d.grid}));
      interleave(programs, [&](Program& p) { return step(p, slab.data()); });
      for (const Dim3i& t : threads(d)) store(ThreadIndex{b, t, d.block, d.grid}, slab.data());
    }
  }

 private:
  template <class Phase>
  void run_phase(const LaunchDims& d, const Dim3i& b, uint8_t* smem, Phase phase) {
    for (const Dim3i& t : threads(d)) phase(ThreadIndex{b, t, d.block, d.grid}, smem);
  }

  template <class Program, class Step>
  void interleave(std::vector<Program>& programs, Step step) {
    if (!shuffled_) {
      for (Program& p : programs)
        while (!step(p)) {
        }
      return;
    }
    std::vector<uint32_t> active(programs.size());
    for (size_t i = 0; i < active.size(); ++i) active[i] = uint32_t(i);
    while (!active.empty()) {
      const size_t j = rng_.below(active.size());
      if (step(programs[active[j]])) {
        active[j] = active.back();
        active.pop_back();
      }
    }
  }

  std::vector<Dim3i> blocks(const LaunchDims& d) { return enumerate(d.grid); }
  std::vector<Dim3i> threads(const LaunchDims& d) { return enumerate(d.block); }

  std::vector<Dim3i> enumerate(const Dim3i& n) {
    std::vector<Dim3i> v;
    v.reserve(size_t(n.x) * n.y * n.z);
    for (int z = 0; z < n.z; ++z)
      for (int y = 0; y < n.y; ++y)
        for (int x = 0; x < n.x; ++x) v.push_back({x, y, z});
    if (shuffled_)
      for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[rng_.below(i)]);
    return v;
  }

  bool shuffled_;
  Rng rng_;
};

struct Stages {
  std::vector<uint8_t> dilated, filled;
};

// The 8 launches of gpu::launch_postprocess, in the same order with the same geometry.
// first_stage (tests of single stages): 0 = everything; 1 = start at hole filling (the input is
// taken as the dilated mask); 2 = start at labelling (the input is taken as the filled mask).
void emulate(PostprocessArgs& a, int64_t seed, int first_stage, Stages* stages) {
  using namespace gpu;
  GridEmulator emu(seed);
  const int n = a.n, h = a.h, w = a.w;
  const size_t px = size_t(n) * h * w;

  if (first_stage > 0) std::memcpy(a.mask, a.premask, px);  // the input stands for that stage's input
  else emu.run_phased(morph_dims(n, h, w), kMorphSmemBytes,
                 [&](const ThreadIndex& t, uint8_t* s) { morph_load(t, a, s); },
                 [&](const ThreadIndex& t, uint8_t* s) { morph_erode_rows(t, a, s); },
                 [&](const ThreadIndex& t, uint8_t* s) { morph_erode_cols(t, a, s); },
                 [&](const ThreadIndex& t, uint8_t* s) { morph_dilate_rows(t, a, s); },
                 [&](const ThreadIndex& t, uint8_t* s) { morph_dilate_cols_store(t, a, s); });
  if (stages) stages->dilated.assign(a.mask, a.mask + px);  // with first_stage > 0: the input

  for (int mode : {int(kLabelBackground), int(kLabelForeground)}) {
    if (mode == kLabelBackground && first_stage > 1) {
      if (stages) stages->filled.assign(a.mask, a.mask + px);
      continue;
    }
    emu.run_local_labelling(
        local_dims(n, h, w), [&](const ThreadIndex& t, int32_t* slab) { label_local_init(t, a, mode, slab); },
        [&](const ThreadIndex& t) { return local_union_begin(t, a, mode); },
        [&](LocalUnionProgram& u, int32_t* slab) { return local_union_step(u, a, mode, slab); },
        [&](const ThreadIndex& t, int32_t* slab) { label_local_store(t, a, mode, slab); });
    emu.run_interleaved(merge_dims(n, h, w), [&](const ThreadIndex& t) { return merge_begin(t, a, mode); },
                        [&](MergeProgram& u) { return merge_step(u, a, mode); });
    if (mode == kLabelBackground) {
      emu.run_interleaved(point_dims(n, h, w), [&](const ThreadIndex& t) { return fill_begin(t, a); },
                          [&](FindProgram& f) { return fill_step(f, a); });
      if (stages) stages->filled.assign(a.mask, a.mask + px);
    }
  }
  emu.run_interleaved(point_dims(n, h, w), [&](const ThreadIndex& t) { return area_begin(t, a); },
                      [&](FindProgram& f) { return area_step(f, a); });
  emu.run_phased(point_dims(n, h, w), 0, [&](const ThreadIndex& t, uint8_t*) { output_pixel(t, a); });
}

py::tuple emulate_py(py::array mask, int64_t area_threshold, int64_t seed, int inject_fault, bool return_stages,
                     int first_stage) {
  if (mask.ndim() != 3)
    throw py::value_error("emulate_cuda_postprocess: mask must have shape (N, h, w), got ndim " +
                          std::to_string(mask.ndim()));
  if (!(mask.dtype().is(py::dtype::of<uint8_t>()) || mask.dtype().is(py::dtype::of<bool>())))
    throw py::type_error("emulate_cuda_postprocess: mask dtype must be uint8 or bool, got " +
                         std::string(py::str(mask.dtype())));
  if (!(mask.flags() & py::array::c_style))
    throw py::value_error("emulate_cuda_postprocess: mask must be C-contiguous");
  if (inject_fault != gpu::kFaultNone && inject_fault != gpu::kFaultLostUnion)
    throw py::value_error("emulate_cuda_postprocess: unknown inject_fault " + std::to_string(inject_fault));
  if (first_stage < 0 || first_stage > 2)
    throw py::value_error("emulate_cuda_postprocess: first_stage must be 0 (erosion), 1 (hole filling) or 2 "
                          "(labelling), got " + std::to_string(first_stage));
  if (area_threshold < INT32_MIN || area_threshold > INT32_MAX)
    throw py::value_error("emulate_cuda_postprocess: area_threshold out of int32 range");
  const int64_t n = mask.shape(0), h = mask.shape(1), w = mask.shape(2);
  if (h * w >= (int64_t(1) << 31) || n > INT32_MAX)
    throw py::value_error("emulate_cuda_postprocess: an image must have fewer than 2^31 pixels");
  const size_t px = size_t(n * h * w);

  py::array_t<uint8_t> out({n, h, w});
  py::array_t<int64_t> counts(n);
  Stages stages;
  {
    std::vector<uint8_t> premask(static_cast<const uint8_t*>(mask.data()),
                                 static_cast<const uint8_t*>(mask.data()) + px);
    py::gil_scoped_release release;
    // Device workspaces hold whatever the previous batch left: start from garbage, not zeros, so
    // a kernel that relies on zero-initialised memory fails here too.
    std::vector<uint8_t> work(px, 0xCC);
    std::vector<int32_t> labels(px, -7), area(px, 0x55555555);
    std::vector<unsigned long long> kept(size_t(n), 0xDEADBEEFull);  // kernel 5 must zero these
    gpu::PostprocessArgs a{};
    a.premask = premask.data();
    a.mask = work.data();
    a.labels = labels.data();
    a.area = area.data();
    a.counts = kept.data();
    a.out = out.mutable_data();
    a.out_stride_n = h * w;
    a.out_stride_y = w;
    a.out_stride_x = 1;
    a.n = int(n);
    a.h = int(h);
    a.w = int(w);
    a.area_threshold = int(area_threshold);
    a.fault = inject_fault;
    if (px > 0) emulate(a, seed, first_stage, return_stages ? &stages : nullptr);
    int64_t* c = counts.mutable_data();
    for (int64_t i = 0; i < n; ++i) c[i] = px > 0 ? int64_t(kept[size_t(i)]) : 0;
  }
  if (!return_stages) return py::make_tuple(out, counts);
  auto as_array = [&](const std::vector<uint8_t>& v) {
    py::array_t<uint8_t> r({n, h, w});
    if (!v.empty()) std::memcpy(r.mutable_data(), v.data(), v.size());
    return r;
  };
  py::dict d;
  d["dilated"] = as_array(stages.dilated);
  d["filled"] = as_array(stages.filled);
  return py::make_tuple(out, counts, d);
}

}  // namespace

void bind_emulator(py::module_& m) {
  m.def(
      "emulate_cuda_postprocess",
      [](py::array mask, int64_t area_threshold, int64_t seed, int inject_fault, bool return_stages,
         int first_stage) { return emulate_py(mask, area_threshold, seed, inject_fault, return_stages, first_stage); },
      py::arg("mask"), py::arg("area_threshold"), py::arg("seed"), py::arg("inject_fault") = 0,
      py::arg("return_stages") = false, py::arg("first_stage") = 0,
      "Runs the CUDA post-processing kernels' __host__ __device__ bodies on the CPU over their grids.\n"
      "mask: uint8/bool (N, h, w) C-contiguous, nonzero = 1. seed < 0: launch order; seed >= 0: blocks\n"
      "shuffled, threads of union-find phases interleaved step by step (seeded, reproducible).\n"
      "Returns (uint8 (N, h, w) 0/1, int64 (N,) kept-component counts)[, dict of stages\n"
      "{'dilated', 'filled'} uint8 (N, h, w) when return_stages]. inject_fault=1 (tests only) makes\n"
      "the union-find drop a retry, a bug that only interleaving exposes. first_stage (tests of single\n"
      "stages): 0 = all, 1 = start at hole filling (mask = dilated mask), 2 = start at labelling.");
}

}  // namespace desra
