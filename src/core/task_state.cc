#include "core/task_state.h"

#include <string>

#include "common/spin.h"

namespace kvdist::core {

TaskState::TaskState(size_t num_configs, uint32_t num_layers, std::function<void()> on_finish)
    : start_(Clock::now()),
      on_finish_(std::move(on_finish)),
      results_(num_configs),
      messages_(num_configs),
      layers_done_(num_configs, 0),
      attempted_(num_configs, false),
      figures_(num_layers) {
  for (uint32_t l = 0; l < num_layers; ++l) figures_[l].layer = l;
}

int64_t TaskState::since_start_ns() const {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start_).count();
}

bool TaskState::wait(std::optional<Clock::time_point> deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  bool spun = false;
  for (;;) {
    check_watchdog_locked();
    if (finished_) return true;
    bool ended = maybe_finish_locked();
    if (ended) {
      lock.unlock();
      finish_if(true);
      return true;
    }
    if (exited_ && !spun && end_spin_) {
      // Every layer is posted: the end is about one layer's copy away. Wait
      // for it awake (spinning) for a short while: a waiter that sleeps is
      // woken tens of microseconds late on a virtual machine.
      spun = true;
      lock.unlock();
      auto until = Clock::now() + kEndSpin;
      if (deadline && *deadline < until) until = *deadline;
      spin_until([this] { return finished_flag_.load(); }, until);
      lock.lock();
      continue;
    }
    auto wake = deadline;
    if (in_sync_ && !sync_abandoned_ && sync_deadline_ && (!wake || *sync_deadline_ < *wake))
      wake = sync_deadline_;
    if (!wake) {
      cv_.wait(lock);
    } else {
      if (deadline && Clock::now() >= *deadline) return false;
      cv_.wait_until(lock, *wake);
    }
  }
}

std::vector<std::optional<StatusCode>> TaskState::results() {
  std::lock_guard<std::mutex> lock(mu_);
  return results_;
}

std::string TaskState::message(size_t config) {
  std::lock_guard<std::mutex> lock(mu_);
  return config < messages_.size() ? messages_[config] : std::string();
}

void TaskState::cancel() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_) {
      stop_ = true;
      cancelled_ = true;
    }
    cv_.notify_all();
  }
  wait(std::nullopt);
}

bool TaskState::finished() {
  std::unique_lock<std::mutex> lock(mu_);
  check_watchdog_locked();
  bool ended = maybe_finish_locked();
  lock.unlock();
  finish_if(ended);
  std::lock_guard<std::mutex> again(mu_);
  return finished_;
}

void TaskState::poke() { (void)finished(); }

TaskFigures TaskState::figures() {
  std::lock_guard<std::mutex> lock(mu_);
  TaskFigures f;
  f.bytes = bytes_;
  f.puts = puts_;
  f.elapsed_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     (finished_ ? end_ : Clock::now()) - start_)
                     .count();
  f.start_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(start_.time_since_epoch()).count();
  for (const LayerFigures& l : figures_) {
    if (l.synchronized_ns >= 0) f.layers.push_back(l);
  }
  return f;
}

bool TaskState::wait_for_window(uint32_t window) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return stop_ || layer_writes_.size() < window; });
  return !stop_;
}

void TaskState::begin_sync(uint32_t layer, std::vector<size_t> covering,
                           std::optional<Clock::time_point> deadline) {
  std::lock_guard<std::mutex> lock(mu_);
  in_sync_ = true;
  sync_layer_ = layer;
  sync_covering_ = std::move(covering);
  sync_deadline_ = deadline;
  cv_.notify_all();  // waiters adopt the new deadline
}

bool TaskState::end_sync() {
  std::lock_guard<std::mutex> lock(mu_);
  check_watchdog_locked();
  in_sync_ = false;
  if (sync_abandoned_ || stop_) return false;
  figures_[sync_layer_].synchronized_ns = since_start_ns();
  return true;
}

std::vector<size_t> TaskState::running(const std::vector<size_t>& candidates) {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<size_t> out;
  for (size_t c : candidates) {
    if (!results_[c]) out.push_back(c);
  }
  return out;
}

void TaskState::set_failure_locked(size_t config, const Status& s) {
  if (results_[config]) return;
  results_[config] = s.code();
  messages_[config] = s.message();
}

void TaskState::fail_and_stop(const std::vector<size_t>& configs, const Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  for (size_t c : configs) set_failure_locked(c, why);
  stop_ = true;
  cv_.notify_all();
}

void TaskState::check_watchdog_locked() {
  if (!in_sync_ || sync_abandoned_ || !sync_deadline_ || Clock::now() < *sync_deadline_) return;
  sync_abandoned_ = true;
  for (size_t c : sync_covering_) {
    set_failure_locked(
        c, Status(StatusCode::kTimeout, "synchronize_layer(" + std::to_string(sync_layer_) +
                                            ") did not return before its deadline"));
  }
  stop_ = true;
  cv_.notify_all();
}

void TaskState::begin_post(uint32_t layer, size_t writes, uint64_t bytes, uint64_t puts) {
  std::lock_guard<std::mutex> lock(mu_);
  posting_ = true;
  writes_in_flight_ += writes;
  layer_writes_[layer] += writes;
  figures_[layer].bytes += bytes;
  figures_[layer].puts += puts;
  bytes_ += bytes;
  puts_ += puts;
}

void TaskState::end_post(uint32_t layer) {
  bool ended = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    posting_ = false;
    figures_[layer].posted_ns = since_start_ns();
    ended = maybe_finish_locked();
    cv_.notify_all();
  }
  finish_if(ended);
}

bool TaskState::write_done(size_t config, uint32_t layer, uint32_t layers_in_config,
                           const Status& s) {
  bool ended = false;
  bool failed_now = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    --writes_in_flight_;
    auto it = layer_writes_.find(layer);
    if (it != layer_writes_.end() && --it->second == 0) {
      layer_writes_.erase(it);
      figures_[layer].completed_ns = since_start_ns();
    }
    if (!s.ok()) {
      failed_now = !results_[config];
      set_failure_locked(config, s);
    } else if (++layers_done_[config] == layers_in_config && !results_[config]) {
      results_[config] = StatusCode::kSuccess;
    }
    ended = maybe_finish_locked();
    cv_.notify_all();
  }
  finish_if(ended);
  return failed_now;
}

void TaskState::job_exited() {
  bool ended = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    exited_ = true;
    ended = maybe_finish_locked();
    cv_.notify_all();
  }
  finish_if(ended);
}

void TaskState::mark_attempted(size_t config) {
  std::lock_guard<std::mutex> lock(mu_);
  attempted_[config] = true;
}

void TaskState::preset(size_t config, const Status& s) {
  std::lock_guard<std::mutex> lock(mu_);
  set_failure_locked(config, s);
}

bool TaskState::exited() {
  std::lock_guard<std::mutex> lock(mu_);
  return exited_;
}

bool TaskState::stopped() {
  std::lock_guard<std::mutex> lock(mu_);
  return stop_;
}

bool TaskState::maybe_finish_locked() {
  if (finished_ || posting_ || writes_in_flight_ != 0 || !(exited_ || sync_abandoned_)) {
    return false;
  }
  if (cancelled_) {
    for (size_t c = 0; c < results_.size(); ++c) {
      if (attempted_[c]) set_failure_locked(c, Status(StatusCode::kFailed, "cancelled"));
    }
  }
  finished_ = true;
  finished_flag_ = true;
  end_ = Clock::now();
  cv_.notify_all();
  return true;
}

void TaskState::finish_if(bool ended) {
  if (ended && on_finish_) {
    auto fn = std::move(on_finish_);
    on_finish_ = nullptr;
    fn();
  }
}

}  // namespace kvdist::core
