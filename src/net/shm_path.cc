// The shared-memory path: copies into a peer on this host (its shared
// memory mapped here, or its own memory through process_vm_writev), run
// on the copy lanes; their return on the progress thread.
#include <cerrno>
#include <cstring>
#include <string>

#include "net/transport_impl.h"

namespace kvdist::net {

void Transport::Impl::lane_finished(uint64_t id, int err) {
  auto it = writes.find(id);
  if (it == writes.end()) return;
  PendingWrite& w = it->second;
  std::shared_ptr<Peer> peer = w.peer;
  w.batch_pending = false;
  w.batch.reset();
  --peer->lane_batches;
  Status failed;
  if (err != 0 && err != ECANCELED) {
    failed =
        Status(StatusCode::kLinkFailed, "copy into cluster " + std::to_string(peer->cluster_id) +
                                            " failed: " + std::strerror(err));
    if (w.status.ok()) w.status = failed;
  }
  if (peer->lane_batches == 0) {
    auto after = std::move(peer->after_lanes);
    peer->after_lanes.clear();
    for (auto& fn : after) fn();
  }
  if (!failed.ok()) fail_peer(peer, failed);
  if (peer->lane_batches == 0 && peer->teardown_pending) teardown_data(peer);
  maybe_complete(id);
}

void Transport::Impl::drain_lane_done() {
  std::vector<std::pair<uint64_t, int>> done;
  {
    std::lock_guard<std::mutex> lock(lane_mu);
    done.swap(lane_done);
  }
  for (auto [id, err] : done) lane_finished(id, err);
}

size_t Transport::Impl::lane_batches_in_flight() const {
  size_t n = 0;
  for (const auto& [id, w] : writes) n += w.batch_pending ? 1 : 0;
  return n;
}

void Transport::Impl::post_copies(uint64_t id, const std::shared_ptr<Peer>& peer,
                                  std::vector<mem::CopyPiece> copies) {
  writes.at(id).batch_pending = true;
  ++peer->lane_batches;
  auto batch = lanes->run(std::move(copies), [this, id](int err) {
    if (worker->on_progress_thread()) {
      lane_finished(id, err);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(lane_mu);
      lane_done.emplace_back(id, err);
    }
    worker->post([this] { drain_lane_done(); });
  });
  auto it = writes.find(id);
  if (it != writes.end() && it->second.batch_pending) it->second.batch = std::move(batch);
}

}  // namespace kvdist::net
