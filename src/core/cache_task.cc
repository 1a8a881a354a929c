#include "kvdist/cache_task.h"

#include "core/task_state.h"

namespace kvdist {
namespace {

std::optional<core::Clock::time_point> deadline_of(std::optional<uint32_t> timeout_ms) {
  if (!timeout_ms) return std::nullopt;
  return core::Clock::now() + std::chrono::milliseconds(*timeout_ms);
}

}  // namespace

StatusCode CacheTask::synchronize(std::optional<uint32_t> timeout_ms) const {
  if (!state_->wait(deadline_of(timeout_ms))) return StatusCode::kWaitProcessTimeout;
  for (const auto& r : state_->results()) {
    if (r && *r != StatusCode::kSuccess) return *r;
  }
  return StatusCode::kSuccess;
}

std::vector<std::optional<StatusCode>> CacheTask::get_results(
    std::optional<uint32_t> timeout_ms) const {
  if (!state_->wait(deadline_of(timeout_ms))) {
    return std::vector<std::optional<StatusCode>>(state_->results().size(),
                                                  StatusCode::kWaitProcessTimeout);
  }
  return state_->results();
}

std::string CacheTask::result_message(size_t config_index) const {
  return state_->message(config_index);
}

Status CacheTask::cancel() const {
  state_->cancel();
  return Status();
}

bool CacheTask::done() const { return state_->finished(); }

TaskFigures CacheTask::figures() const { return state_->figures(); }

}  // namespace kvdist
