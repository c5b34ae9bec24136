#include "thread_pool.h"

#include <algorithm>

namespace bnb {
namespace cpu {

ThreadPool::ThreadPool(int32_t num_threads) {
  const int32_t workers = num_threads > 1 ? num_threads - 1 : 0;
  workers_.reserve(static_cast<size_t>(workers));
  try {
    for (int32_t i = 0; i < workers; ++i) workers_.emplace_back([this] { worker_loop(); });
  } catch (...) {
    // A thread that cannot start (thread limit, memory) throws here while the earlier ones run:
    // a joinable std::thread destroyed during unwinding would call std::terminate.
    stop_workers();
    throw;
  }
}

ThreadPool::~ThreadPool() { stop_workers(); }

void ThreadPool::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  for (std::thread& t : workers_) t.join();
  workers_.clear();
}

bool ThreadPool::work_on(Job* job, int64_t task) {
  const int64_t total = job->num_tasks;
  for (;;) {
    job->call(job->fn, task);
    // Claim the next task before reporting this one done: while a claimed task is unfinished
    // the job (owned by the waiting caller) stays alive.
    const int64_t next = job->next.fetch_add(1, std::memory_order_relaxed);
    const bool last = job->done.fetch_add(1, std::memory_order_acq_rel) + 1 == total;
    if (next >= total) return last;
    task = next;
  }
}

void ThreadPool::submit_and_wait(Job* job) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    queue_.push_back(job);
  }
  wake_.notify_all();
  const int64_t first = job->next.fetch_add(1, std::memory_order_relaxed);
  if (first < job->num_tasks) work_on(job, first);
  std::unique_lock<std::mutex> lock(mu_);
  auto it = std::find(queue_.begin(), queue_.end(), job);
  if (it != queue_.end()) queue_.erase(it);
  done_.wait(lock, [job] { return job->done.load(std::memory_order_acquire) == job->num_tasks; });
}

void ThreadPool::worker_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    Job* job = queue_.front();
    // Claimed under the lock: the owner removes the job from the queue under the same lock
    // before it can return, so the job is alive here.
    const int64_t task = job->next.fetch_add(1, std::memory_order_relaxed);
    if (task >= job->num_tasks) {
      queue_.pop_front();
      continue;
    }
    lock.unlock();
    const bool last = work_on(job, task);
    lock.lock();
    if (last) done_.notify_all();
  }
}

}  // namespace cpu
}  // namespace bnb
