// The asking side: sends kPullRequest (and kResolveRequest) notes and
// waits, each with a deadline, for the kPullReply that the serving cluster
// sends once every byte landed (or with the cache's whereabouts, or
// instead of them with its refusal).
#ifndef KVDIST_CORE_PULL_CLIENT_H_
#define KVDIST_CORE_PULL_CLIENT_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "core/pull_request.h"
#include "kvdist/status.h"
#include "net/transport.h"

namespace kvdist::core {

class PullClient {
 public:
  explicit PullClient(std::shared_ptr<net::Transport> transport)
      : transport_(std::move(transport)) {}

  // Sends every request to `peer` and waits for all replies until
  // `deadline`: kSuccess, the first refusal, kLinkFailed if the link went
  // down, kWaitProcessTimeout past the deadline (the original's code), or
  // kEngineFinalized.
  Status pull(uint64_t peer, std::vector<PullRequest> requests,
              std::chrono::steady_clock::time_point deadline);

  // Asks `peer` where the cache `key` names lies (for a push by key).
  Result<CacheInfo> resolve(uint64_t peer, const CacheKey& key,
                            std::chrono::steady_clock::time_point deadline);

  // From the progress thread.
  void on_reply(uint64_t peer, uint64_t pull_id, StatusCode code, std::string message);
  void on_peer_down(uint64_t peer, const Status& why);
  // Fails every pull that waits.
  void stop();

 private:
  struct Pending {
    uint64_t peer = 0;
    std::optional<Status> result;
    std::string payload;  // a successful resolve's CacheInfo
  };

  // Sends `count` requests to `peer` (note_for(i, id) encodes the i-th,
  // answered under `id`) and waits until all are answered or `deadline`;
  // the answers in order (no result: none in time).
  Result<std::vector<Pending>> exchange(
      uint64_t peer, size_t count, const std::function<std::string(size_t, uint64_t)>& note_for,
      std::chrono::steady_clock::time_point deadline);

  std::shared_ptr<net::Transport> transport_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<uint64_t, Pending> pending_;
  uint64_t next_id_ = 1;
  bool stopped_ = false;
};

}  // namespace kvdist::core

#endif  // KVDIST_CORE_PULL_CLIENT_H_
