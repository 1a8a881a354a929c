#include "core/pull_client.h"

#include <functional>
#include <string>

#include "core/notes.h"

namespace kvdist::core {

Result<std::vector<PullClient::Pending>> PullClient::exchange(
    uint64_t peer, size_t count, const std::function<std::string(size_t, uint64_t)>& note_for,
    std::chrono::steady_clock::time_point deadline) {
  std::vector<uint64_t> ids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopped_) return Status(StatusCode::kEngineFinalized, "DataDist is finalized");
    for (size_t i = 0; i < count; ++i) {
      ids.push_back(next_id_++);
      pending_[ids.back()].peer = peer;
    }
  }
  for (size_t i = 0; i < count; ++i) transport_->notify(peer, note_for(i, ids[i]));
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_until(lock, deadline, [&] {
    for (uint64_t id : ids) {
      if (!pending_[id].result) return false;
    }
    return true;
  });
  std::vector<Pending> answers;
  for (uint64_t id : ids) {
    answers.push_back(std::move(pending_[id]));
    pending_.erase(id);
  }
  return answers;
}

Status PullClient::pull(uint64_t peer, std::vector<PullRequest> requests,
                        std::chrono::steady_clock::time_point deadline) {
  auto answers = exchange(
      peer, requests.size(),
      [&](size_t i, uint64_t id) {
        requests[i].pull_id = id;
        Note n;
        n.kind = Note::Kind::kPullRequest;
        n.payload = encode_pull_request(requests[i]);
        return encode_note(n);
      },
      deadline);
  if (!answers.ok()) return answers.status();
  Status first;
  for (const Pending& a : answers.value()) {
    if (!a.result) {
      if (first.ok()) {
        first = Status(StatusCode::kWaitProcessTimeout,
                       "the pull from cluster " + std::to_string(peer) +
                           " did not complete before its deadline");
      }
    } else if (!a.result->ok() && first.ok()) {
      first = *a.result;
    }
  }
  return first;
}

Result<CacheInfo> PullClient::resolve(uint64_t peer, const CacheKey& key,
                                      std::chrono::steady_clock::time_point deadline) {
  auto answers = exchange(
      peer, 1,
      [&](size_t, uint64_t id) {
        Note n;
        n.kind = Note::Kind::kResolveRequest;
        n.task_id = id;
        n.payload = encode_cache_key(key);
        return encode_note(n);
      },
      deadline);
  if (!answers.ok()) return answers.status();
  const Pending& p = answers->front();
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
