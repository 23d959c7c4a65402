// Checks backends/jax/native/workers.h on its own: every item of every loop runs exactly once, with
// helpers spinning or asleep between loops, with two threads' loops at once (one gets false and runs
// its loop itself), and in a child forked after the helpers started. Exits 0 when all hold, else
// prints what failed and exits 1. Built and run by tests/test_jax_native_workers.py.

#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <thread>
#include <vector>

#include "workers.h"

namespace {

struct Loop {
  std::vector<std::atomic<int>> runs;
  explicit Loop(int64_t count) : runs(count) {}
  static void Item(void* context, int64_t item) {
    static_cast<Loop*>(context)->runs[item].fetch_add(1);
    for (volatile int spin = 0; spin < 2000; ++spin) {
    }
  }
  bool EachOnce() const {
    for (const auto& run : runs)
      if (run.load() != 1) return false;
    return true;
  }
};

// Runs a loop of `count` items through the helpers, or on this thread where they are busy; returns
// whether the helpers ran it and checks every item ran once.
bool RunLoop(kiln::SpinWorkers* workers, int64_t count, bool* ok) {
  Loop loop(count);
  const bool pooled = workers->TryRun(count, Loop::Item, &loop);
  if (!pooled)
    for (int64_t i = 0; i < count; ++i) Loop::Item(&loop, i);
  if (!loop.EachOnce()) *ok = false;
  return pooled;
}

bool Sequential(kiln::SpinWorkers* workers, int loops, int sleep_every) {
  bool ok = true;
  for (int i = 0; i < loops; ++i) {
    if (sleep_every && i % sleep_every == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
    if (!RunLoop(workers, 1 + i % 97, &ok)) ok = false;  // nothing else runs loops: never busy
  }
  return ok;
}

bool Concurrent(kiln::SpinWorkers* workers) {
  std::atomic<bool> ok{true};
  std::atomic<int> refused{0};
  auto body = [&] {
    bool mine = true;
    for (int i = 0; i < 3000; ++i)
      if (!RunLoop(workers, 1 + i % 13, &mine)) refused.fetch_add(1);
    if (!mine) ok = false;
  };
  std::thread first(body), second(body);
  first.join(), second.join();
  std::printf("concurrent: %d of 6000 loops found the helpers busy\n", refused.load());
  return ok && refused.load() > 0 && refused.load() < 6000;
}

bool ForkedChild(kiln::SpinWorkers* workers) {
  const pid_t child = fork();
  if (child == 0) {
    kiln::SpinWorkers* fresh = kiln::SpinWorkers::Get(3);
    _exit(fresh != workers && Sequential(fresh, 200, 0) ? 0 : 1);
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

int main() {
  kiln::SpinWorkers* workers = kiln::SpinWorkers::Get(3);
  const struct {
    const char* name;
    bool ok;
  } checks[] = {
      {"spinning helpers", Sequential(workers, 5000, 0)},
      {"helpers woken from sleep", Sequential(workers, 200, 7)},
      {"two threads' loops at once", Concurrent(workers)},
      {"the same helpers on a second Get", kiln::SpinWorkers::Get(1) == workers},
      {"a loop too long for the claim word refused", !workers->TryRun(kiln::SpinWorkers::kMaxItems + 1, Loop::Item, nullptr)},
      {"a forked child", ForkedChild(workers)},
  };
  int failed = 0;
  for (const auto& check : checks)
    if (!check.ok) std::printf("FAILED: %s\n", check.name), ++failed;
  return failed ? 1 : 0;
}
