// Binary erosion / dilation with a (2r+1)x(2r+1) square on bit-packed images (CPU).
//
// Border rule (OpenCV's default for cv2.erode / cv2.dilate): pixels outside the image never
// erode and never dilate, i.e. the window is clipped to the image. Hence a radius larger than
// the image acts like radius h-1 vertically / w-1 horizontally, and (on a rectangle) erosion
// or dilation by r1 then by r2 equals one by r1 + r2 (dilate 5x5 three times == r = 6).
#pragma once

#include <cstdint>

#include "desra/bitmask_cpu.h"

namespace desra {

// out = erosion of in (out is reset to in's shape). radius >= 0. `scratch` holds the
// horizontal pass (reused by the caller across calls to avoid fresh pages); none may alias.
void erode_bits(const BitImage& in, BitImage& out, int64_t radius, BitImage& scratch);
// out = dilation of in, same contract.
void dilate_bits(const BitImage& in, BitImage& out, int64_t radius, BitImage& scratch);

}  // namespace desra
