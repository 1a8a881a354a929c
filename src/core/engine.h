// The implementation behind DataDist and CacheManager: owns the transport,
// the cache registry and the running transfer tasks.
#ifndef KVDIST_CORE_ENGINE_H_
#define KVDIST_CORE_ENGINE_H_

#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/cache_registry.h"
#include "core/inbox.h"
#include "core/pull_client.h"
#include "core/pull_server.h"
#include "core/task_state.h"
#include "kvdist/cache_manager.h"
#include "kvdist/data_dist.h"
#include "net/transport.h"

namespace kvdist::core {

class Engine {
 public:
  static Result<std::unique_ptr<Engine>> start(Role role, uint64_t cluster_id,
                                               const Options& options);
  ~Engine();  // finalize()
  void finalize();

  Role role() const { return role_.load(); }
  // See DataDist::switch_role.
  Status switch_role(Role role, const std::string& listen_ip_info);
  uint16_t listen_port() const { return transport_->listen_port(); }
  net::Transport& transport() { return *transport_; }
  CacheRegistry& registry() { return *registry_; }
  Inbox& inbox() { return *inbox_; }

  // See CacheManager::push_cache.
  Status push(const KvCache& src, const CacheKey& dst_key, const PushSpec& spec);
  // See CacheManager::pull_cache.
  Status pull(const CacheKey& key, const KvCache& dst, const PullSpec& spec);

  Status send_message(uint64_t peer, const std::string& payload);
  std::vector<PeerMessage> receive_messages(size_t max, int32_t timeout_ms);

  LinkResult link(const std::vector<ClusterInfo>& clusters, int32_t timeout_ms);
  LinkResult unlink(const std::vector<ClusterInfo>& clusters, int32_t timeout_ms);

  Result<CacheTask> transfer(const KvCache& src, std::shared_ptr<LayerSynchronizer> synchronizer,
                             std::vector<TransferConfig> configs, const BlockMapping& blocks,
                             const TransferOptions& options);

 private:
  Engine(Role role, uint64_t cluster_id, const Options& options)
      : role_(role), cluster_id_(cluster_id), options_(options) {}

  std::atomic<Role> role_;
  uint64_t cluster_id_;
  Options options_;
  std::shared_ptr<net::Transport> transport_;
  std::shared_ptr<CacheRegistry> registry_;
  std::shared_ptr<Inbox> inbox_ = std::make_shared<Inbox>();
  std::shared_ptr<PullServer> pull_server_;
  std::shared_ptr<PullClient> pull_client_;

  // Peers of the running exclusive task (a pull from them is kLinkBusy).
  std::mutex busy_mu_;
  std::shared_ptr<TaskState> exclusive_task_;
  std::vector<uint64_t> exclusive_peers_;
  bool pushing_to(uint64_t peer);
  // Fills dst_cluster_id and dst_addrs of configs addressed by key (and the
  // destination block size), asking each destination where its cache lies.
  Status resolve_keyed(const KvCache& src, std::vector<TransferConfig>& configs,
                       BlockMapping& blocks);

  std::mutex tasks_mu_;
  std::shared_ptr<TaskState> exclusive_;  // the exclusive task holding the manager busy
  std::vector<std::shared_ptr<TaskState>> tasks_;
  std::vector<std::thread> threads_;
  uint64_t next_task_id_ = 1;
  bool finalized_ = false;
};

}  // namespace kvdist::core

#endif  // KVDIST_CORE_ENGINE_H_
