// The serving side of pulls: a PROMPT (or any cluster whose caches a peer
// names) answers kPullRequest notes. Each request is resolved against the
// registry's keys and caches, checked (never reading outside the source
// cache's slice or blocks), and served with transport writes into the
// puller's registered memory (16 MiB each, four in flight, as a push goes
// layer by layer), then answered with a kPullReply once every write
// landed; a refusal is a kPullReply alone. The source cache is pinned
// until the writes are done; a request key is marked pulled only once
// every byte landed.
//
// It also answers kResolveRequest notes (where a cache named by a key
// lies, so that the peer can push into it: push_cache, push_blocks, and
// transfers addressed by key).
//
// Requests are served one after another on a thread of their own: the
// progress thread that hands them over must not block.
#ifndef KVDIST_CORE_PULL_SERVER_H_
#define KVDIST_CORE_PULL_SERVER_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "core/cache_registry.h"
#include "core/pull_request.h"
#include "net/transport.h"

namespace kvdist::core {

class PullServer : public std::enable_shared_from_this<PullServer> {
 public:
  // pushing(peer): whether an exclusive push to peer runs (then a pull
  // from it is refused with kLinkBusy, as the original).
  PullServer(std::shared_ptr<net::Transport> transport, std::shared_ptr<CacheRegistry> registry,
             std::chrono::milliseconds timeout, std::function<bool(uint64_t)> pushing);
  ~PullServer();

  void start();
  // Ends the thread; requests not served yet get no answer (the link is
  // going down with the engine).
  void stop();
  // From the progress thread: queues a request of `peer`.
  void submit(uint64_t peer, PullRequest req);
  void submit_resolve(uint64_t peer, uint64_t id, const CacheKey& key);
  // Whether a pull of `peer` is being served (a push to it is then busy).
  bool serving(uint64_t peer) const;

 private:
  struct Job {
    uint64_t peer = 0;
    bool resolve = false;
    uint64_t id = 0;  // resolve
    CacheKey key;     // resolve
    PullRequest pull;
  };
  void queue(Job job);
  void run();
  void serve(uint64_t peer, const PullRequest& req);
  void serve_resolve(const Job& job);
  // The writes of one pull being served.
  struct Writes {
    std::mutex mu;
    uint64_t peer = 0;
    uint64_t pull_id = 0;
    int64_t cache_id = -1;
    std::optional<KeyId> key;  // marked pulled once every write landed
    std::vector<uint32_t> tensors;
    std::vector<std::vector<net::WriteOp>> chunks;
    size_t next = 0;
    int in_flight = 0;
    Status failure;
  };
  void post_writes(const std::shared_ptr<Writes>& state);
  void wrote(const std::shared_ptr<Writes>& state, const Status& done);
  void reply(uint64_t peer, uint64_t pull_id, const Status& status);
  void finished_serving(uint64_t peer);

  std::shared_ptr<net::Transport> transport_;
  std::shared_ptr<CacheRegistry> registry_;
  const std::chrono::milliseconds timeout_;
  std::function<bool(uint64_t)> pushing_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  std::map<uint64_t, int> serving_;  // peer -> pulls whose writes are in flight
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace kvdist::core

#endif  // KVDIST_CORE_PULL_SERVER_H_
