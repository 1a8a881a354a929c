// The handle of one transfer_cache_async call.
#ifndef KVDIST_CACHE_TASK_H_
#define KVDIST_CACHE_TASK_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "kvdist/status.h"

namespace kvdist {

namespace core {
class TaskState;
}

// Figures of one layer of one task (times in ns since the task started).
struct LayerFigures {
  uint32_t layer = 0;
  int64_t synchronized_ns = -1;  // synchronize_layer returned true
  int64_t posted_ns = -1;        // every put of the layer handed to the transport
  int64_t completed_ns = -1;     // the last destination confirmed the layer
  uint64_t bytes = 0;            // bytes of the layer over all configs
  uint64_t puts = 0;             // put operations (after merging block runs)
};

struct TaskFigures {
  uint64_t bytes = 0;
  uint64_t puts = 0;
  int64_t elapsed_ns = 0;  // start to the end of the task (or now)
  // The task's start on the steady clock (CLOCK_MONOTONIC on Linux: the
  // clock of Python's time.monotonic), ns; the layers' times count from it.
  int64_t start_ns = 0;
  std::vector<LayerFigures> layers;
};

// Copyable, thread-safe handle; all copies observe one task. The task runs
// to its end whether or not a handle is kept.
class CacheTask {
 public:
  explicit CacheTask(std::shared_ptr<core::TaskState> state) : state_(std::move(state)) {}

  // Waits up to timeout_ms (empty: until the task ends; every step of a task
  // has its own deadline, so it does end). Returns kWaitProcessTimeout while
  // the task still runs, else the first result that is neither kSuccess nor
  // "not attempted", else kSuccess.
  StatusCode synchronize(std::optional<uint32_t> timeout_ms = std::nullopt) const;

  // One entry per transfer config, in order: kSuccess, an error code, or
  // empty when no layer of that config was attempted. While the task still
  // runs after timeout_ms: kWaitProcessTimeout for every config.
  std::vector<std::optional<StatusCode>> get_results(
      std::optional<uint32_t> timeout_ms = std::nullopt) const;

  // The message that explains a config's error (empty for success).
  std::string result_message(size_t config_index) const;

  // Stops the task after the layer in progress. Returns once no write of the
  // task can still land (every posted put is complete or its link closed).
  // Configs not finished by then end with kFailed ("cancelled").
  Status cancel() const;

  bool done() const;
  TaskFigures figures() const;

 private:
  std::shared_ptr<core::TaskState> state_;
};

}  // namespace kvdist

#endif  // KVDIST_CACHE_TASK_H_
