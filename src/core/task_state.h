// The shared state of one transfer task: per-config results, the writes in
// flight, and the synchronizer watchdog. Shared by the job thread, the
// transport's completion callbacks (progress thread) and CacheTask handles.
#ifndef KVDIST_CORE_TASK_STATE_H_
#define KVDIST_CORE_TASK_STATE_H_

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kvdist/cache_task.h"
#include "kvdist/status.h"

namespace kvdist::core {

using Clock = std::chrono::steady_clock;

// How long wait() stays awake for the end once every layer is posted.
inline constexpr std::chrono::microseconds kEndSpin{1000};

class TaskState {
 public:
  // on_finish runs once, when the task has ended and no write can land, on
  // whichever thread observed that; it must not block.
  TaskState(size_t num_configs, uint32_t num_layers, std::function<void()> on_finish);

  // ---- observers -----------------------------------------------------------
  // Waits until the task ended or `deadline`; true if it ended.
  bool wait(std::optional<Clock::time_point> deadline);
  std::vector<std::optional<StatusCode>> results();
  std::string message(size_t config);
  // Stops after the layer in progress; returns once the task has ended.
  void cancel();
  bool finished();
  TaskFigures figures();
  // Makes the watchdog look now (an abandoned synchronize_layer call).
  void poke();
  // Whether wait() spins for the end once every layer is posted (kEndSpin);
  // set before the task starts.
  void set_end_spin(bool spin) { end_spin_ = spin; }

  // ---- the job thread ------------------------------------------------------
  // Waits until fewer than `window` layers are unconfirmed; false if the
  // task stopped meanwhile.
  bool wait_for_window(uint32_t window);
  // Marks the start of synchronize_layer(layer); deadline empty = none.
  void begin_sync(uint32_t layer, std::vector<size_t> covering,
                  std::optional<Clock::time_point> deadline);
  // After it returned. false if the watchdog gave up on it (or the task
  // stopped): the caller must not post anything.
  bool end_sync();
  // The configs of `candidates` still running (not failed, not finished).
  std::vector<size_t> running(const std::vector<size_t>& candidates);
  // Fails configs that have no result yet (first error wins) and stops the task.
  void fail_and_stop(const std::vector<size_t>& configs, const Status& why);
  // Before and after handing a layer's writes to the transport.
  void begin_post(uint32_t layer, size_t writes, uint64_t bytes, uint64_t puts);
  void end_post(uint32_t layer);
  // A write of `config` for `layer` completed (progress thread). Returns
  // true if it made the config fail (the caller may notify the peer).
  bool write_done(size_t config, uint32_t layer, uint32_t layers_in_config, const Status& s);
  void job_exited();
  void mark_attempted(size_t config);
  // Sets a result before the job starts (e.g. kNotYetLink).
  void preset(size_t config, const Status& s);
  bool stopped();
  // The job thread has left run() (it may not have if a synchronizer hangs).
  bool exited();

 private:
  void set_failure_locked(size_t config, const Status& s);
  void check_watchdog_locked();
  // Returns true if this call ended the task (caller runs on_finish unlocked).
  bool maybe_finish_locked();
  void finish_if(bool ended);
  int64_t since_start_ns() const;

  std::mutex mu_;
  std::condition_variable cv_;
  const Clock::time_point start_;
  std::function<void()> on_finish_;

  std::vector<std::optional<StatusCode>> results_;
  std::vector<std::string> messages_;
  std::vector<uint32_t> layers_done_;
  std::vector<bool> attempted_;

  bool stop_ = false;
  bool cancelled_ = false;
  bool exited_ = false;
  bool posting_ = false;
  bool finished_ = false;
  std::atomic<bool> finished_flag_{false};  // finished_, for wait()'s spin
  bool end_spin_ = true;
  Clock::time_point end_;

  // Watchdog of the synchronize_layer call in progress.
  bool in_sync_ = false;
  bool sync_abandoned_ = false;
  uint32_t sync_layer_ = 0;
  std::vector<size_t> sync_covering_;
  std::optional<Clock::time_point> sync_deadline_;

  size_t writes_in_flight_ = 0;
  std::map<uint32_t, size_t> layer_writes_;  // unconfirmed writes per layer
  std::vector<LayerFigures> figures_;
  uint64_t bytes_ = 0;
  uint64_t puts_ = 0;
};

}  // namespace kvdist::core

#endif  // KVDIST_CORE_TASK_STATE_H_
