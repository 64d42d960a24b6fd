#include "desra/parallel.h"

#include <pybind11/pybind11.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <memory>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace desra {
namespace {

// Upper bound on the pool: more threads than this only adds start-up cost and contention, and an
// absurd DESRA_NUM_THREADS (say 100000) would exhaust the process table instead of running.
constexpr int kMaxThreads = 256;

int clamp_threads(long n) { return static_cast<int>(std::min<long>(std::max<long>(n, 1), kMaxThreads)); }

// How long a pool thread keeps polling for the next parallel region, and the caller for the end
// of the current one, before sleeping on a condition variable. Why: a call such as detect runs a
// dozen short regions back to back (the D map, then erosion, labelling, output rows), and waking
// a sleeping thread on these VMs takes ~0.1 ms (the idle vCPU is halted): measured, the 1.4 ms
// post-processing of a 4 Mpx mask was no faster on 2 threads than on 1. Polling costs at most
// this much CPU per region.
constexpr auto kSpin = std::chrono::microseconds(200);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Polls ready() for up to kSpin; true if it became true.
template <class Ready>
bool spin_until(Ready&& ready) {
  const auto end = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (ready()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= end) return ready();
  }
}

int default_threads() {
  if (const char* env = std::getenv("DESRA_NUM_THREADS")) {
    long n = std::atol(env);
    if (n > 0) return clamp_threads(n);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return clamp_threads(hw ? static_cast<long>(hw) : 1);
}

std::atomic<int> g_threads{0};
thread_local bool t_inside_pool = false;

class Pool {
 public:
  explicit Pool(int workers) {
    for (int i = 0; i < workers; ++i) threads_.emplace_back([this, i] { loop(i + 1); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_.store(true);
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  int size() const { return static_cast<int>(threads_.size()) + 1; }

  // Runs task(chunk) for chunk in [0, chunks); chunk 0 on the caller.
  void run(int chunks, const std::function<void(int)>& task) {
    std::exception_ptr err;
    {
      std::lock_guard<std::mutex> lk(mu_);
      task_ = &task;
      chunks_ = chunks;
      pending_.store(chunks - 1);
      error_ = nullptr;
      generation_.fetch_add(1);  // seen by polling workers at once, sleeping ones are notified
    }
    cv_.notify_all();
    t_inside_pool = true;
    try {
      task(0);
    } catch (...) {
      err = std::current_exception();
    }
    t_inside_pool = false;
    spin_until([this] { return pending_.load() == 0; });
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [this] { return pending_.load() == 0; });
    task_ = nullptr;
    if (!err) err = error_;
    lk.unlock();
    if (err) std::rethrow_exception(err);
  }

 private:
  void loop(int id) {
    uint64_t seen = 0;
    t_inside_pool = true;
    for (;;) {
      const std::function<void(int)>* task;
      spin_until([&] { return stop_.load() || generation_.load() != seen; });
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_.load() || generation_.load() != seen; });
        if (stop_.load()) return;
        seen = generation_.load();
        if (id >= chunks_) continue;  // fewer chunks than workers this time
        task = task_;
      }
      std::exception_ptr err;
      try {
        (*task)(id);
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(mu_);
      if (err && !error_) error_ = err;
      if (pending_.fetch_sub(1) == 1) done_cv_.notify_one();
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable cv_, done_cv_;
  const std::function<void(int)>* task_ = nullptr;
  int chunks_ = 0;
  std::atomic<int> pending_{0};          // chunks still running on the workers
  std::atomic<uint64_t> generation_{0};  // one per run(): written under mu_, polled without it
  std::atomic<bool> stop_{false};
  std::exception_ptr error_;
};

std::mutex g_pool_mu;
std::unique_ptr<Pool> g_pool;
pid_t g_pool_pid = 0;

}  // namespace

int num_threads() {
  int n = g_threads.load();
  if (n <= 0) {
    n = default_threads();
    g_threads.store(n);
  }
  return n;
}

void set_num_threads(int n) { g_threads.store(n > 0 ? clamp_threads(n) : default_threads()); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  int64_t chunks = std::min<int64_t>(num_threads(), (n + grain - 1) / grain);
  if (chunks <= 1 || t_inside_pool) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> guard(g_pool_mu);  // one parallel region at a time
  if (!g_pool || g_pool->size() != num_threads() || g_pool_pid != getpid()) {
    // After fork the old pool's threads do not exist in this process: drop it without joining.
    if (g_pool && g_pool_pid != getpid()) (void)g_pool.release();
    g_pool.reset(new Pool(num_threads() - 1));
    g_pool_pid = getpid();
  }
  const int64_t step = (n + chunks - 1) / chunks;
  g_pool->run(static_cast<int>(chunks), [&](int c) {
    int64_t b = c * step, e = std::min<int64_t>(n, b + step);
    if (b < e) fn(b, e);
  });
}

void bind_threads(pybind11::module_& m) {
  m.def("num_threads", &num_threads, "Threads the CPU kernels use.");
  m.def("set_num_threads", &set_num_threads, pybind11::arg("n"),
        "Set the CPU kernels' thread count (<= 0: default, DESRA_NUM_THREADS or all cores; at most 256).");
}

}  // namespace desra
