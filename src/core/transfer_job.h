// The worker of one transfer task: walks the layers in ascending order,
// asks the synchronizer, posts each layer's puts without waiting for the
// previous layer (bounded window), and records per-config results.
#ifndef KVDIST_CORE_TRANSFER_JOB_H_
#define KVDIST_CORE_TRANSFER_JOB_H_

#include <memory>
#include <optional>

#include "core/task_state.h"
#include "core/transfer_plan.h"
#include "kvdist/layer_synchronizer.h"
#include "net/transport.h"

namespace kvdist::core {

struct TransferJob : std::enable_shared_from_this<TransferJob> {
  std::shared_ptr<TaskState> state;
  std::weak_ptr<net::Transport> transport;  // the engine owns it
  std::shared_ptr<LayerSynchronizer> synchronizer;
  TransferPlan plan;
  uint64_t task_id = 0;
  // Passed to synchronize_layer; enforced when `enforce_sync_timeout`.
  std::optional<int32_t> sync_timeout_ms;
  bool enforce_sync_timeout = true;
  uint32_t window = 4;

  // The thread body; run it on a shared_ptr. Touches nothing but the
  // members above (completion callbacks keep the job alive), so it may
  // outlive the engine that started it (e.g. stuck in a synchronizer).
  void run();

 private:
  void notify_abort(size_t config, StatusCode code);
};

}  // namespace kvdist::core

#endif  // KVDIST_CORE_TRANSFER_JOB_H_
