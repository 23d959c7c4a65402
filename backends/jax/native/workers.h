// Helper threads of the native kernels' parallel loops that stay awake between loops.
//
// XLA's intra-op pool puts an idle thread to sleep within tens of microseconds, and waking it again
// costs 30-55 us on a virtual machine (the host must reschedule a halted vCPU): longer than a whole
// 128 x 64 x 192 product. Between two calls of a small model (the Python side of a call takes
// 30-50 us) every pool thread fell asleep, so the first parallel kernel of each call ran at serial
// speed plus the wake-up (the transformer sample's first projection: 30 us alone, 71 us in the call).
// onnxruntime's pool spins its workers between runs for the same reason. These helpers spin for
// KILN_SPIN_US microseconds (default kDefaultSpinMicros) after their last loop, yielding the core
// to any other runnable thread as they do, then sleep until the next loop wakes them.
//
// One loop runs at a time: the caller publishes the loop in one atomic word (generation, next item,
// item count), every thread claims items from it by compare-and-swap, and the caller returns once
// every item is done. A second thread that finds the helpers busy gets false and runs its loop on
// XLA's pool instead. A forked child starts a new set of helpers (the parent's threads are not in it).

#pragma once

#include <immintrin.h>
#include <pthread.h>
#include <sched.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <thread>

namespace kiln {

class SpinWorkers {
 public:
  using Task = void (*)(void* context, int64_t item);
  static constexpr int64_t kMaxItems = 0xFFFF;
  static constexpr int64_t kDefaultSpinMicros = 300;

  // The process's helpers (`helpers` threads, started on first use), or nullptr with none to start.
  static SpinWorkers* Get(int64_t helpers) {
    static std::once_flag fork_handler;
    std::call_once(fork_handler, [] { pthread_atfork(nullptr, nullptr, [] { Instance() = nullptr; }); });
    SpinWorkers*& workers = Instance();
    if (workers == nullptr && helpers > 0) {
      static std::mutex starting;
      std::lock_guard<std::mutex> lock(starting);
      if (workers == nullptr) workers = new SpinWorkers(helpers);  // never freed: its threads outlive main
    }
    return workers;
  }

  // Runs task(context, i) for i in [0, count) on this thread and the helpers; false, having run
  // nothing, when another thread's loop holds the helpers or count does not fit the claim word.
  bool TryRun(int64_t count, Task task, void* context) {
    if (count > kMaxItems || busy_.exchange(true, std::memory_order_acquire)) return false;
    task_ = task, context_ = context;
    done_.store(0, std::memory_order_relaxed);
    const uint32_t generation = ++generation_;
    word_.store(Pack(generation, 0, count), std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) > 0) {
      { std::lock_guard<std::mutex> lock(mutex_); }  // a helper counted as a sleeper is waiting by now
      wake_.notify_all();  // outside the lock, so the woken helpers do not block on it at once
    }
    Drain(generation);
    while (done_.load(std::memory_order_acquire) < count) _mm_pause();
    busy_.store(false, std::memory_order_release);
    return true;
  }

 private:
  explicit SpinWorkers(int64_t helpers) : spin_(SpinTime()) {
    for (int64_t t = 0; t < helpers; ++t) std::thread([this] { Serve(); }).detach();
  }

  static SpinWorkers*& Instance() {
    static SpinWorkers* instance = nullptr;
    return instance;
  }

  static std::chrono::nanoseconds SpinTime() {
    const char* text = std::getenv("KILN_SPIN_US");
    const int64_t micros = text && *text ? std::strtoll(text, nullptr, 10) : kDefaultSpinMicros;
    return std::chrono::microseconds(micros < 0 ? 0 : micros);
  }

  static uint64_t Pack(uint32_t generation, int64_t next, int64_t count) {
    return uint64_t{generation} << 32 | static_cast<uint64_t>(next) << 16 | static_cast<uint64_t>(count);
  }
  static uint32_t Generation(uint64_t word) { return static_cast<uint32_t>(word >> 32); }

  // Claims and runs items of loop `generation` until none is left (or a newer loop replaced it).
  void Drain(uint32_t generation) {
    for (;;) {
      uint64_t word = word_.load(std::memory_order_acquire);
      int64_t item;
      do {
        item = static_cast<int64_t>(word >> 16 & 0xFFFF);
        if (Generation(word) != generation || item >= static_cast<int64_t>(word & 0xFFFF)) return;
      } while (!word_.compare_exchange_weak(word, word + (uint64_t{1} << 16), std::memory_order_acq_rel));
      task_(context_, item);
      done_.fetch_add(1, std::memory_order_release);
    }
  }

  // A helper: waits for each new loop (spinning, then asleep) and helps drain it.
  void Serve() {
    uint32_t seen = Generation(word_.load(std::memory_order_acquire));
    for (;;) {
      const auto idle_since = std::chrono::steady_clock::now();
      for (int64_t polls = 1; Generation(word_.load(std::memory_order_acquire)) == seen; ++polls) {
        _mm_pause();
        if (polls % 64) continue;
        if (std::chrono::steady_clock::now() - idle_since < spin_) {
          sched_yield();  // a thread waiting for this core gets it
          continue;
        }
        std::unique_lock<std::mutex> lock(mutex_);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        while (Generation(word_.load(std::memory_order_seq_cst)) == seen) wake_.wait(lock);
        sleepers_.fetch_sub(1, std::memory_order_relaxed);
        break;
      }
      seen = Generation(word_.load(std::memory_order_acquire));
      Drain(seen);
    }
  }

  std::atomic<uint64_t> word_{0};  // generation << 32 | next item << 16 | item count
  std::atomic<int64_t> done_{0};
  std::atomic<bool> busy_{false};
  std::atomic<int> sleepers_{0};
  uint32_t generation_ = 0;  // the caller's, under busy_
  Task task_ = nullptr;
  void* context_ = nullptr;
  const std::chrono::nanoseconds spin_;
  std::mutex mutex_;
  std::condition_variable wake_;
};

}  // namespace kiln
