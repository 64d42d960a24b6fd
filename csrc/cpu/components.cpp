// Component filtering: one union-find pass over the foreground runs (run_labels_cpu.h; areas
// are accumulated at the roots as runs are linked, so no per-region pass is ever needed), then
// a parallel pass that re-extracts each row's runs and sets the bits of runs whose root is kept.
#include "desra/components_cpu.h"

#include <algorithm>
#include <vector>

#include "desra/parallel.h"
#include "desra/run_labels_cpu.h"

namespace desra {

KeptComponents::KeptComponents(const BitImage& in, int64_t area_threshold)
    : in_(in), threshold_(area_threshold) {
  if (in.h == 0 || in.w == 0) return;
  label_runs<true>(
      in, forest_, [&](int64_t n) { area_.resize(static_cast<size_t>(n)); },
      [&](int32_t id, int64_t, int64_t x0, int64_t x1) { area_[id] = x1 - x0; },
      [&](int32_t root, int32_t gone) { area_[root] += area_[gone]; });
  for (size_t i = 0; i < forest_.parent.size(); ++i)
    if (forest_.parent[i] == static_cast<int32_t>(i) && area_[i] > threshold_) ++kept_;
  forest_.flatten();
}

void KeptComponents::row(int64_t y, uint64_t* o) const {
  std::fill(o, o + in_.nw, 0);
  if (kept_ == 0) return;
  int64_t id = forest_.row_start[y];
  for_each_run<true>(in_.row(y), in_.nw, in_.w, [&](int64_t x0, int64_t x1) {
    if (area_[forest_.parent[id]] > threshold_) set_bit_range(o, x0, x1);
    ++id;
  });
}

int64_t filter_components_bits(const BitImage& in, int64_t area_threshold, BitImage& out) {
  out.reset(in.h, in.w);
  if (in.h == 0 || in.w == 0) return 0;
  const KeptComponents kept(in, area_threshold);
  parallel_for(in.h, rows_grain(in.w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) kept.row(y, out.row(y));
  });
  return kept.count();
}

}  // namespace desra
