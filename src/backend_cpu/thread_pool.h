// A fixed pool of worker threads shared by every call on a context. Calls may come from many
// threads at once: each call is a job in a queue, the calling thread works on its own job too,
// and workers take tasks from the oldest unfinished job.
#ifndef BNB_BACKEND_CPU_THREAD_POOL_H_
#define BNB_BACKEND_CPU_THREAD_POOL_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "int_math.h"

namespace bnb {
namespace cpu {

class ThreadPool {
 public:
  // Starts num_threads - 1 workers (the caller of run() is the last thread). Throws
  // std::system_error if a worker cannot start, after joining those that did.
  explicit ThreadPool(int32_t num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int32_t num_threads() const { return static_cast<int32_t>(workers_.size()) + 1; }

  // How many tasks `units` pieces of work of `unit_cost` elements each are split into: a few per
  // thread, none below ~16K elements unless the whole problem is smaller, at least one.
  int64_t task_count(int64_t units, int64_t unit_cost) const {
    constexpr int64_t kMinElementsPerTask = 1 << 14;
    int64_t tasks = static_cast<int64_t>(num_threads()) * 4;
    const int64_t by_size = ceil_div(units * unit_cost, kMinElementsPerTask);
    if (tasks > by_size) tasks = by_size;
    if (tasks > units) tasks = units;
    return tasks < 1 ? 1 : tasks;
  }

  // Calls fn(task) once for every task in [0, num_tasks), spread over the pool; returns when
  // all have finished. fn must not throw.
  template <class Fn>
  void run(int64_t num_tasks, const Fn& fn) {
    if (num_tasks <= 0) return;
    if (num_tasks == 1 || workers_.empty()) {
      for (int64_t t = 0; t < num_tasks; ++t) fn(t);
      return;
    }
    Job job;
    job.num_tasks = num_tasks;
    job.call = [](const void* f, int64_t t) { (*static_cast<const Fn*>(f))(t); };
    job.fn = &fn;
    submit_and_wait(&job);
  }

 private:
  struct Job {
    void (*call)(const void* fn, int64_t task) = nullptr;
    const void* fn = nullptr;
    int64_t num_tasks = 0;
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };

  void submit_and_wait(Job* job);
  // Tells every worker to return and joins them.
  void stop_workers();
  void worker_loop();
  // Runs tasks of `job` starting with `task` (already claimed) until none is left; returns true
  // if this thread finished the job's last task.
  static bool work_on(Job* job, int64_t task);

  std::mutex mu_;
  std::condition_variable wake_;  // new job or stop
  std::condition_variable done_;  // some job finished
  std::deque<Job*> queue_;
  bool stop_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace cpu
}  // namespace bnb

#endif  // BNB_BACKEND_CPU_THREAD_POOL_H_
