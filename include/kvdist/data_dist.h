// DataDist: one cluster's endpoint in a disaggregated deployment. A PROMPT
// listens; DECODERs link to it and receive KV caches it pushes.
#ifndef KVDIST_DATA_DIST_H_
#define KVDIST_DATA_DIST_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kvdist/cache_manager.h"
#include "kvdist/status.h"
#include "kvdist/types.h"

namespace kvdist {

namespace core {
class Engine;
}

struct Options {
  // "ip:port" to listen on. Required for a PROMPT (port 0: any free port,
  // see DataDist::listen_port()).
  std::string listen_ip_info;
  // Deadline of each synchronize_layer call, ms (option llm.SyncKvCacheWaitTime).
  int32_t sync_kv_timeout_ms = 1000;
  // Deadline for the writes of one layer to complete at a destination, ms.
  int32_t transfer_timeout_ms = 10000;
  // Upper bound of memory allocate_cache may map, bytes (ge.flowGraphMemMaxSize).
  uint64_t pool_max_bytes = uint64_t{16} << 30;
  // Recorded only (the original requires it).
  int32_t device_id = 0;
  // Layers a task may have posted but not yet confirmed.
  uint32_t inflight_layers = 4;
  // Threads that copy into peers on this host (kvdist.CopyLanes), the
  // transport's progress thread included: one write is striped over them,
  // several destinations share them. 0: one per online CPU, at most 8.
  uint32_t copy_lanes = 0;
  // A shared secret every link must prove, both ways, in its handshake
  // (kvdist.AuthSecret; HMAC-SHA256 challenge-response). Empty: the
  // environment's KVDIST_AUTH_SECRET, else links are not authenticated.
  // A wrong or missing secret on either side: the link fails with
  // kLinkFailed saying so, and the listener logs the refusal.
  std::string auth_secret;
  // Reach every peer as if on another host (kvdist.NetworkPath = "1"; also
  // KVDIST_NETWORK_PATH=1): no shared memory, no cross-process copies.
  // For network namespaces of one machine, and to measure the network path.
  bool network_path_only = false;

  // Builds Options from LLM-DataDist option keys (llm.listenIpInfo or the
  // C++ API's llm.ListenIpInfo, ge.exec.deviceId or llm.DeviceId,
  // llm.SyncKvCacheWaitTime, ge.flowGraphMemMaxSize, ge.exec.deviceId,
  // kvdist.TransferTimeout, kvdist.InflightLayers, kvdist.CopyLanes,
  // kvdist.AuthSecret, kvdist.NetworkPath).
  // Unknown keys are ignored.
  // A PROMPT without llm.listenIpInfo, or a missing ge.exec.deviceId, is
  // kParamInvalid naming the option.
  static Result<Options> from_map(Role role, const std::map<std::string, std::string>& options);
};

// Largest payload of send_message.
inline constexpr size_t kMaxPeerMessageBytes = 60 * 1024;

// A message a linked cluster sent with send_message.
struct PeerMessage {
  uint64_t from_cluster = 0;
  std::string payload;
};

// Per-cluster outcome of link_clusters / unlink_clusters.
struct LinkResult {
  StatusCode status = StatusCode::kSuccess;  // first failure, else kSuccess
  std::vector<StatusCode> per_cluster;
  // Why each failed ("" where it succeeded): e.g. a refusal for a wrong
  // shared secret.
  std::vector<std::string> messages;
};

// Thread-safe unless stated. Several DataDists may live in one process (the
// llm_datadist package enforces the original's one-per-process rule).
class DataDist {
 public:
  DataDist(Role role, uint64_t cluster_id);
  ~DataDist();  // finalize()
  DataDist(const DataDist&) = delete;
  DataDist& operator=(const DataDist&) = delete;

  Role role() const;
  // Changes the role of an initialized DataDist with no link (kExistLink
  // otherwise). It listens on listen_ip_info ("ip:port"; required for a
  // PROMPT) from now on, or stops listening where that is empty. Caches
  // stay.
  Status switch_role(Role role, const std::string& listen_ip_info = "");
  uint64_t cluster_id() const { return cluster_id_; }

  // Starts the transport (and the listener of a PROMPT). A second init is a
  // no-op returning kSuccess.
  Status init(const Options& options);
  // Ends every task (their unfinished configs fail), closes links, unmaps
  // memory. Idempotent. Bounded by the transfer deadline.
  void finalize();
  bool initialized() const { return engine_ != nullptr; }

  // The bound listen port of a PROMPT (useful with port 0); 0 otherwise.
  uint16_t listen_port() const;

  // Links to at most 16 clusters, one after the other, each within
  // timeout_ms. Never throws; the per-cluster codes say what happened:
  // kLinkFailed (refused, unreachable, wrong cluster id, or not done within
  // timeout_ms), kAlreadyLink, kProcessingLink, kParamInvalid for an address
  // that is not IPv4, kClusterNumExceedLimit for more than 16 clusters.
  LinkResult link_clusters(const std::vector<ClusterInfo>& clusters, int32_t timeout_ms = 3000);
  // Orderly unlink (the peer is told); tasks' writes to it fail with
  // kLinkFailed. Returns at once; the endpoints close in the background.
  // kNotYetLink for a cluster that is not linked. Only remote_cluster_id of
  // each ClusterInfo is used.
  LinkResult unlink_clusters(const std::vector<ClusterInfo>& clusters, int32_t timeout_ms = 3000);
  // kSuccess if remote_cluster_id is linked and alive, kNotYetLink otherwise.
  Status check_link_status(uint64_t remote_cluster_id);
  std::vector<uint64_t> linked_clusters() const;

  // Small messages between linked clusters, in either direction (a DECODER
  // telling its PROMPT where a request's blocks are, a PROMPT telling a
  // DECODER that a request's cache is complete). They travel on the link's
  // control endpoint, in order, after every note of transfers the sender
  // saw complete before sending. kNotYetLink if the cluster is not linked,
  // kParamInvalid above kMaxPeerMessageBytes. Best effort once sent: a link
  // that fails loses what is in flight.
  Status send_message(uint64_t remote_cluster_id, const std::string& payload);
  // Up to max_messages received messages, oldest first; waits up to
  // timeout_ms for the first when none is waiting (0: do not wait). At most
  // 4096 wait unread; later ones are dropped (dropped_messages() counts them).
  std::vector<PeerMessage> receive_messages(size_t max_messages, int32_t timeout_ms);
  uint64_t dropped_messages() const;

  // Valid between init and finalize; owned by this DataDist.
  CacheManager* cache_manager();

 private:
  Role role_;
  uint64_t cluster_id_;
  std::unique_ptr<core::Engine> engine_;
  std::unique_ptr<CacheManager> cache_manager_;
};

}  // namespace kvdist

#endif  // KVDIST_DATA_DIST_H_
