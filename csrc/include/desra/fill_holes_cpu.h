// Hole filling on bit-packed images (CPU), identical to
// scipy.ndimage.binary_fill_holes(mask, structure=np.ones((3, 3))): a background pixel becomes
// foreground unless it is 8-connected through background to a pixel on the image border.
#pragma once

#include "desra/bitmask_cpu.h"

namespace desra {

// out = in with its holes filled (out is reset to in's shape; may not alias in). O(pixels/64 +
// runs): one labelling of the background runs, no iteration to a fixed point.
void fill_holes_bits(const BitImage& in, BitImage& out);

}  // namespace desra
