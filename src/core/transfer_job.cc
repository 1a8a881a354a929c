#include "core/transfer_job.h"

#include <exception>
#include <string>

#include "core/notes.h"

namespace kvdist::core {
namespace {

std::vector<net::WriteOp> to_ops(const std::vector<PlannedPut>& puts) {
  std::vector<net::WriteOp> ops;
  ops.reserve(puts.size());
  for (const PlannedPut& p : puts) ops.push_back({p.src, p.dst, p.len, p.region});
  return ops;
}

}  // namespace

void TransferJob::notify_abort(size_t c, StatusCode code) {
  Note n;
  n.kind = Note::Kind::kAbort;
  n.task_id = task_id;
  n.code = code;
  n.addrs = plan.configs[c].dst_addrs;
  if (auto t = transport.lock()) t->notify(plan.configs[c].dst_cluster, encode_note(n));
}

void TransferJob::run() {
  std::vector<size_t> all;
  for (size_t c = 0; c < plan.configs.size(); ++c) all.push_back(c);

  for (uint32_t layer = 0; layer < plan.num_layers; ++layer) {
    std::vector<size_t> covering;
    for (size_t c : state->running(all)) {
      if (plan.configs[c].range.contains(layer)) covering.push_back(c);
    }
    if (covering.empty()) continue;  // nobody needs it: no synchronize call
    if (!state->wait_for_window(window)) break;

    std::optional<Clock::time_point> deadline;
    std::optional<int32_t> timeout = sync_timeout_ms;
    if (enforce_sync_timeout && timeout) {
      deadline = Clock::now() + std::chrono::milliseconds(*timeout);
    }
    state->begin_sync(layer, covering, deadline);
    bool go = false;
    Status failure;
    try {
      go = synchronizer->synchronize_layer(layer, timeout);
      if (!go) {
        failure = Status(StatusCode::kParamInvalid,
                         "synchronize_layer(" + std::to_string(layer) + ") returned false");
      }
    } catch (const std::exception& e) {
      failure = Status(StatusCode::kFailed,
                       "synchronize_layer(" + std::to_string(layer) + ") raised: " + e.what());
    } catch (...) {
      failure = Status(StatusCode::kFailed,
                       "synchronize_layer(" + std::to_string(layer) + ") raised an exception");
    }
    if (!state->end_sync()) break;  // abandoned by the watchdog, or cancelled
    if (deadline && Clock::now() > *deadline && failure.ok()) {
      failure = Status(StatusCode::kTimeout, "synchronize_layer(" + std::to_string(layer) +
                                                 ") returned after its deadline");
    }
    if (!failure.ok()) {
      std::vector<size_t> hit = state->running(covering);
      state->fail_and_stop(hit, failure);
      for (size_t c : hit) notify_abort(c, failure.code());
      break;
    }

    // A destination may have failed while we waited.
    covering = state->running(covering);
    uint64_t bytes = 0;
    uint64_t puts = 0;
    for (size_t c : covering) {
      const auto& p = plan.configs[c].puts[layer - plan.configs[c].range.start];
      puts += p.size();
      for (const PlannedPut& put : p) bytes += put.len;
      state->mark_attempted(c);
    }
    state->begin_post(layer, covering.size(), bytes, puts);
    for (size_t c : covering) {
      const ConfigPlan& cp = plan.configs[c];
      const uint32_t k = layer - cp.range.start;
      Note n;
      n.kind = Note::Kind::kLayer;
      n.task_id = task_id;
      n.layer = layer;
      n.addrs.assign(cp.dst_addrs.begin() + plan.tensors_per_layer * k,
                     cp.dst_addrs.begin() + plan.tensors_per_layer * (k + 1));
      auto on_done = [self = shared_from_this(), c, layer](const Status& s) {
        const uint32_t layers_in_config = self->plan.configs[c].range.size();
        if (self->state->write_done(c, layer, layers_in_config, s) &&
            s.code() != StatusCode::kLinkFailed) {
          self->notify_abort(c, s.code());
        }
      };
      auto t = transport.lock();
      if (!t) {
        on_done(Status(StatusCode::kEngineFinalized, "the engine was finalized"));
        continue;
      }
      t->write(cp.dst_cluster, to_ops(cp.puts[k]), encode_note(n), std::move(on_done));
    }
    state->end_post(layer);
  }
  // Released here, on the job's own thread: the last write's completion
  // (progress thread) would otherwise drop it, and a Python synchronizer
  // then takes the GIL just when the task's waiter wants it back.
  synchronizer.reset();
  state->job_exited();
}

}  // namespace kvdist::core
