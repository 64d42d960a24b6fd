// A small persistent thread pool for the CPU kernels.
//
// Why not OpenMP: GNU libgomp is not fork-safe (a child forked after the pool started can hang
// in its first parallel region) and batch jobs fork decoder workers; torch also ships its own
// libgomp. This pool is created lazily, re-created after fork (pid check), and runs
// `parallel_for(n, fn)` with static chunking: fn(begin, end) on contiguous index ranges.
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace desra {

// Number of threads the kernels use (>= 1). Default: hardware concurrency, or the
// DESRA_NUM_THREADS environment variable when set.
int num_threads();
void set_num_threads(int n);

// Runs fn(begin, end) over [0, n) split into at most num_threads() contiguous chunks of at least
// `grain` items; the calling thread takes the first chunk. Blocks until all chunks are done.
// Not re-entrant: a nested call runs serially on the calling thread.
void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace desra
