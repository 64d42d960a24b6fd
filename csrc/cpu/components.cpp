// Component filtering: one sequential union-find pass over the foreground runs (areas are
// accumulated at the roots as runs are linked, so no per-region pass is ever needed), then a
// parallel pass that re-extracts each row's runs and sets the bits of runs whose root is kept.
#include "desra/components_cpu.h"

#include <algorithm>
#include <vector>

#include "desra/parallel.h"
#include "desra/run_labels_cpu.h"

namespace desra {

int64_t filter_components_bits(const BitImage& in, int64_t area_threshold, BitImage& out) {
  out.reset(in.h, in.w);
  if (in.h == 0 || in.w == 0) return 0;
  RunForest f;
  std::vector<int64_t> area;  // per run; component areas at the roots after pass 1
  label_runs<true>(
      in, f, [&](int64_t, int64_t x0, int64_t x1) { area.push_back(x1 - x0); },
      [&](int32_t root, int32_t gone) { area[root] += area[gone]; });
  int64_t kept = 0;
  for (size_t i = 0; i < f.parent.size(); ++i)
    if (f.parent[i] == static_cast<int32_t>(i) && area[i] > area_threshold) ++kept;
  if (kept == 0) {
    std::fill(out.words.data(), out.words.data() + out.words.size(), 0);
    return 0;
  }
  f.flatten();
  parallel_for(in.h, rows_grain(in.w), [&](int64_t y0, int64_t y1) {
    for (int64_t y = y0; y < y1; ++y) {
      int64_t id = f.row_start[y];
      uint64_t* o = out.row(y);
      std::fill(o, o + in.nw, 0);
      for_each_run<true>(in.row(y), in.nw, in.w, [&](int64_t x0, int64_t x1) {
        if (area[f.parent[id]] > area_threshold) set_bit_range(o, x0, x1);
        ++id;
      });
    }
  });
  return kept;
}

}  // namespace desra
