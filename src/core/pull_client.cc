#include "core/pull_client.h"

#include <string>

#include "core/notes.h"

namespace kvdist::core {

Status PullClient::pull(uint64_t peer, std::vector<PullRequest> requests,
                        std::chrono::steady_clock::time_point deadline) {
  std::vector<uint64_t> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return Status(StatusCode::kEngineFinalized, "DataDist is finalized");
    for (PullRequest& r : requests) {
      r.pull_id = next_id_++;
      pending_[r.pull_id].peer = peer;
      ids.push_back(r.pull_id);
    }
  }
  for (const PullRequest& r : requests) {
    Note n;
    n.kind = Note::Kind::kPullRequest;
    n.payload = encode_pull_request(r);
    transport_->notify(peer, encode_note(n));
  }
  std::unique_lock<std::mutex> lock(mu_);
  auto all_done = [&] {
    for (uint64_t id : ids) {
      if (!pending_[id].result) return false;
    }
    return true;
  };
  const bool done = cv_.wait_until(lock, deadline, all_done);
  Status first;
  for (uint64_t id : ids) {
    const auto& result = pending_[id].result;
    if (!result) {
      if (first.ok()) {
        first = Status(StatusCode::kWaitProcessTimeout,
                       "the pull from cluster " + std::to_string(peer) +
                           " did not complete before its deadline");
      }
    } else if (!result->ok() && first.ok()) {
      first = *result;
    }
    pending_.erase(id);
  }
  (void)done;
  return first;
}

Result<CacheInfo> PullClient::resolve(uint64_t peer, const CacheKey& key,
                                      std::chrono::steady_clock::time_point deadline) {
  uint64_t id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return Status(StatusCode::kEngineFinalized, "DataDist is finalized");
    id = next_id_++;
    pending_[id].peer = peer;
  }
  Note n;
  n.kind = Note::Kind::kResolveRequest;
  n.task_id = id;
  n.payload = encode_cache_key(key);
  transport_->notify(peer, encode_note(n));
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_until(lock, deadline, [&] { return pending_[id].result.has_value(); });
  Pending p = std::move(pending_[id]);
  pending_.erase(id);
  if (!p.result) {
    return Status(StatusCode::kTimeout, "cluster " + std::to_string(peer) +
                                            " did not say where the cache is before the deadline");
  }
  if (!p.result->ok()) return *p.result;
  CacheInfo info;
  if (!decode_cache_info(p.payload, &info)) {
    return Status(StatusCode::kFailed, "cluster " + std::to_string(peer) +
                                           " answered with a malformed cache description");
  }
  return info;
}

void PullClient::on_reply(uint64_t peer, uint64_t pull_id, StatusCode code, std::string message) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = pending_.find(pull_id);
  if (it == pending_.end() || it->second.peer != peer || it->second.result) return;
  if (code == StatusCode::kSuccess) {
    it->second.result = Status();
    it->second.payload = std::move(message);
  } else {
    it->second.result = Status(code, "cluster " + std::to_string(peer) + ": " + message);
  }
  cv_.notify_all();
}

void PullClient::on_peer_down(uint64_t peer, const Status& why) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, p] : pending_) {
    if (p.peer == peer && !p.result) {
      p.result = Status(StatusCode::kLinkFailed,
                        "link to cluster " + std::to_string(peer) + " ended: " + why.message());
    }
  }
  cv_.notify_all();
}

void PullClient::stop() {
  std::lock_guard<std::mutex> lock(mu_);
  stopped_ = true;
  for (auto& [id, p] : pending_) {
    if (!p.result) p.result = Status(StatusCode::kEngineFinalized, "DataDist is finalized");
  }
  cv_.notify_all();
}

}  // namespace kvdist::core
