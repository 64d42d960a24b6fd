// Connected-component area filtering on bit-packed images (CPU), identical to keeping the
// labels of cv2.connectedComponentsWithStats(mask, connectivity=8) whose CC_STAT_AREA is
// strictly greater than area_threshold.
#pragma once

#include <cstdint>
#include <vector>

#include "desra/bitmask_cpu.h"
#include "desra/run_labels_cpu.h"

namespace desra {

// out = the 8-connected foreground components of in with area > area_threshold (out is reset
// to in's shape; may not alias in). Returns how many components were kept. O(pixels/64 + runs):
// run-based union-find with areas summed at the roots, then one parallel write pass.
int64_t filter_components_bits(const BitImage& in, int64_t area_threshold, BitImage& out);

// The same in two steps, so that a caller can consume kept rows directly (the fused
// post-processing unpacks them into its output without a kept-mask image): the constructor
// labels `in`; row() may then be called from any thread. `in` must outlive it.
class KeptComponents {
 public:
  KeptComponents(const BitImage& in, int64_t area_threshold);
  int64_t count() const { return kept_; }
  // out[0, nw) = row y of the kept components.
  void row(int64_t y, uint64_t* out) const;

 private:
  const BitImage& in_;
  int64_t threshold_;
  RunForest forest_;          // flattened: parent = root
  std::vector<int64_t> area_;  // component areas at the roots
  int64_t kept_ = 0;
};

}  // namespace desra
