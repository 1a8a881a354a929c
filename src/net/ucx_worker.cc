#include "net/ucx_worker.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <string>

namespace kvdist::net {
namespace {

Status ucx_error(const char* what, ucs_status_t s) {
  return Status(StatusCode::kFailed, std::string(what) + ": " + ucs_status_string(s));
}

}  // namespace

Result<std::unique_ptr<UcxWorker>> UcxWorker::create(bool network_only) {
  std::unique_ptr<UcxWorker> w(new UcxWorker());
  ucp_config_t* config = nullptr;
  ucs_status_t s = ucp_config_read(nullptr, nullptr, &config);
  if (s != UCS_OK) return ucx_error("ucp_config_read", s);
  // The control connection (client-server, peer error handling) needs tcp.
  // A UCX_TLS that names only other transports (e.g. "sm") gets tcp added,
  // for the control path; puts still take the fastest transport named.
  const char* tls = std::getenv("UCX_TLS");
  if (network_only && (tls == nullptr || *tls == '\0')) ucp_config_modify(config, "TLS", "^sm");
  if (tls != nullptr) {
    std::string t = tls;
    if (!t.empty() && t[0] != '^' && t.find("tcp") == std::string::npos &&
        t.find("all") == std::string::npos) {
      ucp_config_modify(config, "TLS", (t + ",tcp").c_str());
    }
  }
  unsigned major = 0;
  unsigned minor = 0;
  unsigned release = 0;
  ucp_get_version(&major, &minor, &release);
  if ((major > 1 || minor >= 16) && std::getenv("UCX_TCP_BRIDGE_ENABLE") == nullptr) {
    // Newer UCX (1.22 of the libucx-cu12 wheel) leaves out bridge devices
    // unless asked; hosts with VMs or containers link through br0 or
    // docker0, and the namespace tests' hub is one.
    ucp_config_modify(config, "TCP_BRIDGE_ENABLE", "y");
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED;
  params.features = UCP_FEATURE_RMA | UCP_FEATURE_AM | UCP_FEATURE_WAKEUP;
  params.mt_workers_shared = 0;
  s = ucp_init(&params, config, &w->context_);
  ucp_config_release(config);
  if (s != UCS_OK) return ucx_error("ucp_init", s);

  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE | UCP_WORKER_PARAM_FIELD_EVENTS;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  wp.events = UCP_WAKEUP_RMA | UCP_WAKEUP_AMO | UCP_WAKEUP_TAG_SEND | UCP_WAKEUP_TAG_RECV |
              UCP_WAKEUP_TX | UCP_WAKEUP_RX;
  s = ucp_worker_create(w->context_, &wp, &w->worker_);
  if (s != UCS_OK) return ucx_error("ucp_worker_create", s);
  s = ucp_worker_get_efd(w->worker_, &w->worker_fd_);
  if (s != UCS_OK) return ucx_error("ucp_worker_get_efd", s);

  w->wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  w->epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  if (w->wake_fd_ < 0 || w->epoll_fd_ < 0) {
    return Status(StatusCode::kFailed, "eventfd/epoll_create1 failed");
  }
  for (int fd : {w->worker_fd_, w->wake_fd_}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(w->epoll_fd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return Status(StatusCode::kFailed, "epoll_ctl failed");
    }
  }
  return w;
}

UcxWorker::~UcxWorker() {
  stop();
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  if (context_ != nullptr) ucp_cleanup(context_);
  if (wake_fd_ >= 0) close(wake_fd_);
  if (epoll_fd_ >= 0) close(epoll_fd_);
}

void UcxWorker::start(Task on_tick, std::chrono::milliseconds tick_interval) {
  on_tick_ = std::move(on_tick);
  tick_interval_ = tick_interval;
  running_ = true;
  thread_ = std::thread([this] {
    thread_id_ = std::this_thread::get_id();
    loop();
  });
}

void UcxWorker::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;  // a second stop() only joins (nothing to join)
  }
  wake();
  if (thread_.joinable()) thread_.join();
  thread_id_ = std::thread::id();
  running_ = false;
}

bool UcxWorker::post(Task fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || !running_) return false;
    queue_.push_back(std::move(fn));
  }
  wake();
  return true;
}

Status UcxWorker::run_sync(const Task& fn, std::chrono::milliseconds timeout) {
  if (on_progress_thread()) {
    fn();
    return Status();
  }
  struct Done {
    std::mutex mu;
    std::condition_variable cv;
    bool started = false;
    bool abandoned = false;
    bool done = false;
  };
  auto done = std::make_shared<Done>();
  // fn usually captures the caller's locals by reference: it must never run
  // after run_sync returned. A caller that times out abandons it unless it
  // has already started, in which case it waits for it to finish.
  bool posted = post([fn, done] {
    {
      std::lock_guard<std::mutex> lock(done->mu);
      if (done->abandoned) return;
      done->started = true;
    }
    fn();
    std::lock_guard<std::mutex> lock(done->mu);
    done->done = true;
    done->cv.notify_all();
  });
  if (!posted) return Status(StatusCode::kEngineFinalized, "transport stopped");
  std::unique_lock<std::mutex> lock(done->mu);
  if (!done->cv.wait_for(lock, timeout, [&] { return done->done; })) {
    if (!done->started) {
      done->abandoned = true;
      return Status(StatusCode::kTimeout, "transport did not answer in time");
    }
    done->cv.wait(lock, [&] { return done->done; });
  }
  return Status();
}

void UcxWorker::wake() {
  uint64_t one = 1;
  ssize_t n = write(wake_fd_, &one, sizeof(one));
  (void)n;
}

bool UcxWorker::drain() {
  std::deque<Task> batch;
  bool stopping = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(queue_);
    stopping = stopping_;
  }
  for (Task& t : batch) t();
  return stopping;
}

void UcxWorker::loop() {
  auto next_tick = std::chrono::steady_clock::now();
  for (;;) {
    bool stopping = drain();
    while (ucp_worker_progress(worker_) != 0) {
    }
    auto now = std::chrono::steady_clock::now();
    if (now >= next_tick || stopping) {
      if (on_tick_) on_tick_();
      next_tick = now + tick_interval_;
    }
    if (stopping) {
      std::lock_guard<std::mutex> lock(mu_);
      if (queue_.empty()) break;
      continue;
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!queue_.empty()) continue;
    }
    ucs_status_t s = ucp_worker_arm(worker_);
    if (s == UCS_ERR_BUSY) continue;
    auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       next_tick - std::chrono::steady_clock::now())
                       .count();
    epoll_event events[2];
    int n = epoll_wait(epoll_fd_, events, 2, static_cast<int>(std::max<int64_t>(wait_ms, 0)));
    for (int i = 0; i < n; ++i) {
      if (events[i].data.fd == wake_fd_) {
        uint64_t v = 0;
        ssize_t r = read(wake_fd_, &v, sizeof(v));
        (void)r;
      }
    }
  }
}

bool UcxWorker::progress_until(const std::function<bool()>& fn,
                               std::chrono::steady_clock::time_point end) {
  while (!fn()) {
    if (std::chrono::steady_clock::now() >= end) return false;
    if (ucp_worker_progress(worker_) == 0) std::this_thread::yield();
  }
  return true;
}

}  // namespace kvdist::net
