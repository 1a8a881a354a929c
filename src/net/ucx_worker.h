// The UCX context and the one worker of a transport, owned by one progress
// thread. Other threads never touch UCX: they hand closures to post(), which
// the progress thread runs in order. The thread sleeps on the worker's event
// fd (and a wake-up eventfd) when there is nothing to do: no busy spinning.
#ifndef KVDIST_NET_UCX_WORKER_H_
#define KVDIST_NET_UCX_WORKER_H_

#include <ucp/api/ucp.h>

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "kvdist/status.h"

namespace kvdist::net {

class UcxWorker {
 public:
  using Task = std::function<void()>;

  // Creates the context (RMA, AM, wakeup) and the worker; does not start the
  // thread. network_only: no shared-memory transport (UCX_TLS "^sm" unless
  // UCX_TLS is set), so peers on this host are reached as over a network.
  static Result<std::unique_ptr<UcxWorker>> create(bool network_only = false);
  ~UcxWorker();  // stop()

  // Starts the progress thread. on_tick runs on it after every round of
  // progress and at least every tick_interval (deadline checks).
  void start(Task on_tick, std::chrono::milliseconds tick_interval);
  // Runs the queued closures, then joins the thread. Idempotent.
  void stop();

  // Thread-safe. Runs fn on the progress thread; false if stopped (fn is
  // dropped, not run).
  bool post(Task fn);
  // Runs fn on the progress thread and waits for it, at most `timeout`.
  // Runs fn inline when called on the progress thread.
  Status run_sync(const Task& fn, std::chrono::milliseconds timeout);
  bool on_progress_thread() const { return std::this_thread::get_id() == thread_id_.load(); }

  // Progress-thread only.
  ucp_context_h context() const { return context_; }
  ucp_worker_h worker() const { return worker_; }
  // Progresses until fn() is true or the deadline passes (progress thread,
  // used during shutdown only).
  bool progress_until(const std::function<bool()>& fn, std::chrono::steady_clock::time_point end);

 private:
  UcxWorker() = default;
  void loop();
  void wake();
  bool drain();

  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  int worker_fd_ = -1;
  int wake_fd_ = -1;
  int epoll_fd_ = -1;

  std::mutex mu_;
  std::deque<Task> queue_;
  bool stopping_ = false;
  std::atomic<bool> running_{false};
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_;
  Task on_tick_;
  std::chrono::milliseconds tick_interval_{50};
};

}  // namespace kvdist::net

#endif  // KVDIST_NET_UCX_WORKER_H_
