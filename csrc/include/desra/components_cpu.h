// Connected-component area filtering on bit-packed images (CPU), identical to keeping the
// labels of cv2.connectedComponentsWithStats(mask, connectivity=8) whose CC_STAT_AREA is
// strictly greater than area_threshold.
#pragma once

#include <cstdint>

#include "desra/bitmask_cpu.h"

namespace desra {

// out = the 8-connected foreground components of in with area > area_threshold (out is reset
// to in's shape; may not alias in). Returns how many components were kept. O(pixels/64 + runs):
// run-based union-find with areas summed at the roots, then one parallel write pass.
int64_t filter_components_bits(const BitImage& in, int64_t area_threshold, BitImage& out);

}  // namespace desra
