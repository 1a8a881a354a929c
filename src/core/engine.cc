#include "core/engine.h"

#include <arpa/inet.h>

#include <algorithm>
#include <string>
#include <thread>

#include "core/notes.h"
#include "core/transfer_job.h"
#include "core/transfer_plan.h"

namespace kvdist::core {
namespace {

constexpr size_t kMaxClustersPerCall = 16;

// What the transport's callbacks reach: set once by start(), read by the
// progress thread, which may already be running then.
struct Receivers {
  std::shared_ptr<CacheRegistry> registry;
  std::shared_ptr<PullServer> server;
  std::shared_ptr<PullClient> client;
};

class ReceiverSlot {
 public:
  void set(const std::shared_ptr<CacheRegistry>& r, const std::shared_ptr<PullServer>& s,
           const std::shared_ptr<PullClient>& c) {
    std::lock_guard<std::mutex> lock(mu_);
    registry_ = r;
    server_ = s;
    client_ = c;
  }
  Receivers get() {
    std::lock_guard<std::mutex> lock(mu_);
    return Receivers{registry_.lock(), server_.lock(), client_.lock()};
  }

 private:
  std::mutex mu_;
  std::weak_ptr<CacheRegistry> registry_;
  std::weak_ptr<PullServer> server_;
  std::weak_ptr<PullClient> client_;
};

// push_cache / push_blocks: the source is ready; every layer goes at once.
class Ready : public LayerSynchronizer {
 public:
  bool synchronize_layer(uint32_t, std::optional<int32_t>) override { return true; }
};

Status invalid(std::string msg) { return Status(StatusCode::kParamInvalid, std::move(msg)); }

bool parse_ip_port(const std::string& s, std::string* ip, uint16_t* port) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size()) return false;
  const std::string digits = s.substr(colon + 1);
  if (digits.size() > 5 || digits.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  unsigned long v = std::stoul(digits);
  if (v > 65535) return false;
  *ip = s.substr(0, colon);
  *port = static_cast<uint16_t>(v);
  return true;
}

}  // namespace

Result<std::unique_ptr<Engine>> Engine::start(Role role, uint64_t cluster_id,
                                              const Options& options) {
  std::unique_ptr<Engine> e(new Engine(role, cluster_id, options));
  net::TransportOptions t;
  t.cluster_id = cluster_id;
  t.write_timeout = std::chrono::milliseconds(options.transfer_timeout_ms);
  t.copy_lanes = options.copy_lanes;
  t.auth_secret = options.auth_secret;
  t.network_only = options.network_path_only;
  if (!options.listen_ip_info.empty()) {
    if (!parse_ip_port(options.listen_ip_info, &t.listen_ip, &t.listen_port)) {
      return Status(StatusCode::kParamInvalid,
                    "listen_ip_info '" + options.listen_ip_info + "' is not ip:port");
    }
    t.listen = true;
  } else if (role == Role::kPrompt) {
    return Status(StatusCode::kParamInvalid, "a PROMPT needs listen_ip_info (llm.listenIpInfo)");
  }
  // The registry and the pull endpoints are created after the transport,
  // but the transport's events (on its progress thread, which may already
  // run) need them: route them through a slot filled in below.
  auto slot = std::make_shared<ReceiverSlot>();
  net::TransportEvents events;
  std::weak_ptr<Inbox> inbox = e->inbox_;
  events.on_note = [slot, inbox](uint64_t peer, std::string payload) {
    Note note;
    if (!decode_note(payload, &note)) return;
    switch (note.kind) {
      case Note::Kind::kMessage:
        if (auto in = inbox.lock()) in->push(PeerMessage{peer, std::move(note.payload)});
        return;
      case Note::Kind::kPullRequest: {
        PullRequest req;
        Receivers r = slot->get();
        if (r.server && decode_pull_request(note.payload, &req))
          r.server->submit(peer, std::move(req));
        return;
      }
      case Note::Kind::kResolveRequest: {
        CacheKey key;
        Receivers r = slot->get();
        if (r.server && decode_cache_key(note.payload, &key)) {
          r.server->submit_resolve(peer, note.task_id, key);
        }
        return;
      }
      case Note::Kind::kPullReply:
        if (auto c = slot->get().client) {
          c->on_reply(peer, note.task_id, note.code, std::move(note.payload));
        }
        return;
      case Note::Kind::kLayer:
      case Note::Kind::kAbort:
        if (auto r = slot->get().registry) r->on_note(peer, note);
        return;
    }
  };
  events.on_peer_down = [slot](uint64_t peer, const Status& why, size_t links_left) {
    Receivers r = slot->get();
    if (r.registry) r.registry->on_peer_down(peer, why, links_left > 0);
    if (r.client) r.client->on_peer_down(peer, why);
  };
  auto transport = net::Transport::start(t, std::move(events));
  if (!transport.ok()) return transport.status();
  e->transport_ = std::shared_ptr<net::Transport>(std::move(transport).value());
  e->registry_ = std::make_shared<CacheRegistry>(e->transport_, options.pool_max_bytes);
  Engine* self = e.get();
  e->pull_server_ = std::make_shared<PullServer>(
      e->transport_, e->registry_, std::chrono::milliseconds(options.transfer_timeout_ms),
      [self](uint64_t peer) { return self->pushing_to(peer); });
  e->pull_server_->start();
  e->pull_client_ = std::make_shared<PullClient>(e->transport_);
  slot->set(e->registry_, e->pull_server_, e->pull_client_);
  return e;
}

Engine::~Engine() { finalize(); }

void Engine::finalize() {
  std::vector<std::shared_ptr<TaskState>> tasks;
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(tasks_mu_);
    if (finalized_) return;
    finalized_ = true;
    tasks.swap(tasks_);
    threads.swap(threads_);
  }
  inbox_->close();
  if (pull_client_) pull_client_->stop();
  // Stop every task; the transport's shutdown fails what is still in flight.
  for (auto& t : tasks) t->fail_and_stop({}, Status());
  if (transport_) transport_->shutdown();  // absent if start() failed
  // After the transport: a request being served then fails at once
  // instead of waiting out its deadline.
  if (pull_server_) pull_server_->stop();
  auto deadline = Clock::now() + std::chrono::milliseconds(options_.transfer_timeout_ms);
  for (size_t i = 0; i < threads.size(); ++i) {
    // A job stuck in a synchronizer that never returns is left behind: it
    // holds only shared state and posts nothing once stopped.
    if (tasks[i]->wait(deadline) && tasks[i]->exited()) {
      threads[i].join();
    } else {
      threads[i].detach();
    }
  }
}

namespace {

// Runs op on each cluster (at most 16) and gathers the per-cluster codes.
template <typename Op>
LinkResult per_cluster(const std::vector<ClusterInfo>& clusters, Op op) {
  LinkResult r;
  if (clusters.size() > kMaxClustersPerCall) {
    r.status = StatusCode::kClusterNumExceedLimit;
    r.per_cluster.assign(clusters.size(), StatusCode::kClusterNumExceedLimit);
    r.messages.assign(clusters.size(), "more than 16 clusters in one call");
    return r;
  }
  for (const ClusterInfo& c : clusters) {
    Status s = op(c);
    r.per_cluster.push_back(s.code());
    r.messages.push_back(s.ok() ? std::string() : s.message());
    if (!s.ok() && r.status == StatusCode::kSuccess) r.status = s.code();
  }
  return r;
}

}  // namespace

LinkResult Engine::link(const std::vector<ClusterInfo>& clusters, int32_t timeout_ms) {
  return per_cluster(clusters, [&](const ClusterInfo& c) {
    return transport_->connect(c.remote_cluster_id, c.remote_ip, c.remote_port,
                               std::chrono::milliseconds(timeout_ms));
  });
}

LinkResult Engine::unlink(const std::vector<ClusterInfo>& clusters, int32_t timeout_ms) {
  return per_cluster(clusters, [&](const ClusterInfo& c) {
    return transport_->disconnect(c.remote_cluster_id, std::chrono::milliseconds(timeout_ms));
  });
}

Result<CacheTask> Engine::transfer(const KvCache& src_in,
                                   std::shared_ptr<LayerSynchronizer> synchronizer,
                                   std::vector<TransferConfig> configs,
                                   const BlockMapping& blocks_in, const TransferOptions& options) {
  if (role_.load() == Role::kDecoder) {
    return Status(StatusCode::kParamInvalid,
                  "transfer_cache_async is not supported by a DECODER (only a PROMPT pushes)");
  }
  if (!synchronizer) return Status(StatusCode::kParamInvalid, "layer_synchronizer is null");
  // Destinations named by key: ask their clusters where those caches lie.
  BlockMapping blocks = blocks_in;
  Status resolved = resolve_keyed(src_in, configs, blocks);
  if (!resolved.ok()) return resolved;
  // Values of the call first, in the original's order, on the caller's view
  // of the cache; then the registry's own copy must agree with it.
  Status valid = validate_transfer(src_in, configs, blocks);
  if (!valid.ok()) return valid;

  std::lock_guard<std::mutex> lock(tasks_mu_);
  if (finalized_) return Status(StatusCode::kEngineFinalized, "DataDist is finalized");
  if (options.exclusive && exclusive_ && !exclusive_->finished()) {
    return Status(StatusCode::kLinkBusy,
                  "a transfer_cache_async task of this manager is still running");
  }
  if (options.exclusive) {
    for (const TransferConfig& c : configs) {
      if (pull_server_->serving(c.dst_cluster_id)) {
        return Status(StatusCode::kLinkBusy, "cluster " + std::to_string(c.dst_cluster_id) +
                                                 " is pulling from this cluster");
      }
    }
  }
  auto pinned = registry_->pin_view(src_in, "src_cache");
  if (!pinned.ok()) return pinned.status();
  // The caller's view decides how many tensors make a layer (the original's
  // tensor_num_per_layer); the registry's copy, where the bytes are.
  KvCache src = pinned.value();
  src.desc.tensors_per_layer = src_in.desc.tensors_per_layer;
  if (src.desc.tensor_bytes() != src_in.desc.tensor_bytes() ||
      src.desc.num_tensors != src_in.desc.num_tensors) {
    registry_->unpin(src.cache_id);
    return Status(StatusCode::kParamInvalid, "src_cache does not match cache " +
                                                 std::to_string(src.cache_id) +
                                                 " as this manager allocated it");
  }
  TransferPlan plan = plan_transfer(src, configs, blocks);

  // Every destination range must lie in memory its cluster registered,
  // before anything moves. Unlinked clusters end with kNotYetLink.
  std::vector<Status> presets(configs.size());
  for (size_t c = 0; c < plan.configs.size(); ++c) {
    std::vector<std::pair<uint64_t, uint64_t>> ranges;
    for (const auto& layer : plan.configs[c].puts) {
      for (const PlannedPut& p : layer) ranges.emplace_back(p.dst, p.len);
    }
    std::vector<uint64_t> regions;
    Status s =
        transport_->check_remote(plan.configs[c].dst_cluster, ranges,
                                 std::chrono::milliseconds(options_.transfer_timeout_ms), &regions);
    if (s.ok() && regions.size() == ranges.size()) {
      // Later writes must land in these very regions (not in memory freed
      // and registered again at the same address meanwhile).
      size_t i = 0;
      for (auto& layer : plan.configs[c].puts) {
        for (PlannedPut& p : layer) p.region = regions[i++];
      }
    }
    if (s.code() == StatusCode::kParamInvalid) {
      registry_->unpin(src.cache_id);
      return Status(StatusCode::kParamInvalid,
                    "transfer_configs[" + std::to_string(c) + "]: " + s.message());
    }
    if (!s.ok()) presets[c] = s;
  }

  std::weak_ptr<CacheRegistry> weak_registry = registry_;
  int64_t src_id = src.cache_id;
  auto state =
      std::make_shared<TaskState>(configs.size(), plan.num_layers, [weak_registry, src_id] {
        if (auto r = weak_registry.lock()) r->unpin(src_id);
      });
  for (size_t c = 0; c < presets.size(); ++c) {
    if (!presets[c].ok()) state->preset(c, presets[c]);
  }
  // A waiter that spins for the end takes a core: only where the lanes
  // leave one free.
  state->set_end_spin(transport_->copy_lanes() < std::thread::hardware_concurrency());
  auto job = std::make_shared<TransferJob>();
  job->state = state;
  job->transport = transport_;
  job->synchronizer = std::move(synchronizer);
  job->plan = std::move(plan);
  job->task_id = next_task_id_++;
  job->enforce_sync_timeout = !options.unbounded_synchronizer;
  if (!options.unbounded_synchronizer) {
    job->sync_timeout_ms = options.sync_timeout_ms.value_or(options_.sync_kv_timeout_ms);
  }
  job->window = std::max<uint32_t>(1, options_.inflight_layers);

  // Forget finished tasks (their threads have ended or are about to).
  for (size_t i = 0; i < tasks_.size();) {
    if (tasks_[i]->finished()) {
      if (tasks_[i]->exited()) {
        threads_[i].join();
      } else {
        threads_[i].detach();  // stuck in a synchronizer; holds only shared state
      }
      tasks_.erase(tasks_.begin() + static_cast<std::ptrdiff_t>(i));
      threads_.erase(threads_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
  tasks_.push_back(state);
  threads_.emplace_back([job] { job->run(); });
  if (options.exclusive) {
    exclusive_ = state;
    std::lock_guard<std::mutex> busy(busy_mu_);
    exclusive_task_ = state;
    exclusive_peers_.clear();
    for (const TransferConfig& c : configs) exclusive_peers_.push_back(c.dst_cluster_id);
  }
  return CacheTask(state);
}

bool Engine::pushing_to(uint64_t peer) {
  std::lock_guard<std::mutex> lock(busy_mu_);
  return exclusive_task_ && !exclusive_task_->finished() &&
         std::find(exclusive_peers_.begin(), exclusive_peers_.end(), peer) !=
             exclusive_peers_.end();
}

Status Engine::switch_role(Role role, const std::string& listen_ip_info) {
  if (!transport_->peers().empty()) {
    return Status(StatusCode::kExistLink, "switch_role needs every link unlinked first");
  }
  std::string ip;
  uint16_t port = 0;
  const bool listen = role == Role::kPrompt || !listen_ip_info.empty();
  in_addr parsed{};
  if (listen && (!parse_ip_port(listen_ip_info, &ip, &port) ||
                 inet_pton(AF_INET, ip.c_str(), &parsed) != 1)) {
    return Status(StatusCode::kParamInvalid,
                  "llm.listenIpInfo must be ip:port, got '" + listen_ip_info + "'");
  }
  transport_->stop_listening();
  if (listen) {
    Status s = transport_->listen(ip, port);
    if (!s.ok()) return s;
  }
  role_ = role;
  return Status();
}

Status Engine::resolve_keyed(const KvCache& src, std::vector<TransferConfig>& configs,
                             BlockMapping& blocks) {
  const uint32_t n = src.desc.tensors_per_layer;
  const bool paged = !blocks.src_block_indices.empty() || !blocks.dst_block_indices.empty();
  for (size_t c = 0; c < configs.size(); ++c) {
    TransferConfig& cfg = configs[c];
    if (!cfg.dst_key) continue;
    const std::string name = "transfer_configs[" + std::to_string(c) + "]";
    const CacheKey& key = *cfg.dst_key;
    if (key.kind == CacheKey::Kind::kRequest) {
      return invalid(name + ": a destination is named by cache id and batch, or by a blocks key");
    }
    cfg.dst_cluster_id = key.prompt_cluster_id;
    if (!transport_->connected(cfg.dst_cluster_id)) {
      return Status(StatusCode::kNotYetLink,
                    name + ": cluster " + std::to_string(cfg.dst_cluster_id) + " is not linked");
    }
    auto info = pull_client_->resolve(
        cfg.dst_cluster_id, key,
        Clock::now() + std::chrono::milliseconds(options_.transfer_timeout_ms));
    if (!info.ok()) return Status(info.status().code(), name + ": " + info.status().message());
    if (n == 0 || info->num_tensors % n != 0 || info->rows == 0) {
      return invalid(name + ": the destination's " + std::to_string(info->num_tensors) +
                     " tensors are not whole layers of " + std::to_string(n));
    }
    const LayerRange src_layers =
        cfg.src_layer_range.value_or(LayerRange{0, src.desc.num_tensors / n});
    const LayerRange dst_layers =
        cfg.dst_layer_range.value_or(LayerRange{0, info->num_tensors / n});
    if (dst_layers.start >= dst_layers.stop || src_layers.size() != dst_layers.size() ||
        uint64_t{dst_layers.stop} * n > info->num_tensors) {
      return invalid(name + ": dst_layer_range [" + std::to_string(dst_layers.start) + ", " +
                     std::to_string(dst_layers.stop) +
                     ") must lie in the destination and be as long as src_layer_range");
    }
    const uint64_t dst_stride = info->tensor_bytes / info->rows;
    if (paged) {
      if (blocks.dst_block_memory_size.value_or(0) == 0) blocks.dst_block_memory_size = dst_stride;
      if (*blocks.dst_block_memory_size != dst_stride) {
        return invalid(name + ": the destination's blocks are " + std::to_string(dst_stride) +
                       " bytes, not " + std::to_string(*blocks.dst_block_memory_size));
      }
      for (size_t i = 0; i < blocks.dst_block_indices.size(); ++i) {
        if (blocks.dst_block_indices[i] >= info->rows) {
          return invalid(name + ": dst block " + std::to_string(blocks.dst_block_indices[i]) +
                         " is not below the destination's " + std::to_string(info->rows));
        }
      }
    } else {
      const uint64_t src_stride =
          src.desc.tensor_bytes() / static_cast<uint64_t>(std::max<int64_t>(1, src.desc.shape[0]));
      if (src_stride != dst_stride) {
        return invalid(name + ": a batch of the source is " + std::to_string(src_stride) +
                       " bytes, of the destination " + std::to_string(dst_stride));
      }
    }
    cfg.dst_addrs.clear();
    for (uint32_t layer = dst_layers.start; layer < dst_layers.stop; ++layer) {
      for (uint32_t kv = 0; kv < n; ++kv) {
        const uint64_t base = info->tensor_addrs[uint64_t{layer} * n + kv];
        cfg.dst_addrs.push_back(paged ? base : base + info->batch_index * dst_stride);
      }
    }
  }
  return Status();
}

Status Engine::push(const KvCache& src, const CacheKey& dst_key, const PushSpec& spec) {
  if (spec.tensors_per_layer == 0) return invalid("tensor_num_per_layer must be > 0");
  const auto deadline = Clock::now() + std::chrono::milliseconds(
                                           spec.timeout_ms.value_or(options_.sync_kv_timeout_ms));
  TransferConfig cfg;
  cfg.dst_key = dst_key;
  cfg.src_layer_range = spec.src_layers;
  cfg.dst_layer_range = spec.dst_layers;
  cfg.src_batch_index = spec.src_batch_index;
  BlockMapping blocks;
  blocks.src_block_indices = spec.src_blocks;
  blocks.dst_block_indices = spec.dst_blocks;
  KvCache source = src;
  source.desc.tensors_per_layer = spec.tensors_per_layer;
  auto task = transfer(source, std::make_shared<Ready>(), {cfg}, blocks, TransferOptions());
  if (!task.ok()) return task.status();
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
  const StatusCode code =
      task->synchronize(static_cast<uint32_t>(std::max<int64_t>(0, left.count())));
  if (code == StatusCode::kWaitProcessTimeout) {
    task->cancel();
    return Status(StatusCode::kTimeout, "the push to cluster " +
                                            std::to_string(dst_key.prompt_cluster_id) +
                                            " did not complete before its deadline");
  }
  if (code != StatusCode::kSuccess) return Status(code, task->result_message(0));
  return Status();
}

Status Engine::pull(const CacheKey& key, const KvCache& dst_in, const PullSpec& spec) {
  const uint64_t peer = key.prompt_cluster_id;
  // Own references: the wait below ends at finalize, and the registry and
  // client must outlive this call's last steps.
  std::shared_ptr<CacheRegistry> registry = registry_;
  std::shared_ptr<PullClient> client = pull_client_;
  auto pinned = registry->pin_view(dst_in, "kv_cache");
  if (!pinned.ok()) return pinned.status();
  const KvCache dst = pinned.value();
  auto unpin = [registry, id = dst.cache_id] { registry->unpin(id); };
  auto requests = plan_pull_requests(key, dst, spec);
  if (!requests.ok()) {
    unpin();
    return requests.status();
  }
  if (!transport_->connected(peer)) {
    unpin();
    return Status(StatusCode::kNotYetLink, "cluster " + std::to_string(peer) + " is not linked");
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(
                                           spec.timeout_ms.value_or(options_.sync_kv_timeout_ms));
  Status s = client->pull(peer, std::move(requests).value(), deadline);
  // dst stays pinned only while the pull is known to run: after a timeout
  // the serving side's write may still land, and deallocate_cache's
  // withdrawal waits for it.
  unpin();
  return s;
}

Status Engine::send_message(uint64_t peer, const std::string& payload) {
  if (payload.size() > kMaxPeerMessageBytes) {
    return Status(StatusCode::kParamInvalid, "message of " + std::to_string(payload.size()) +
                                                 " bytes exceeds " +
                                                 std::to_string(kMaxPeerMessageBytes));
  }
  if (!transport_->connected(peer)) {
    return Status(StatusCode::kNotYetLink, "cluster " + std::to_string(peer) + " is not linked");
  }
  Note n;
  n.kind = Note::Kind::kMessage;
  n.payload = payload;
  transport_->notify(peer, encode_note(n));
  return Status();
}

std::vector<PeerMessage> Engine::receive_messages(size_t max, int32_t timeout_ms) {
  auto deadline = Clock::now() + std::chrono::milliseconds(std::max(0, timeout_ms));
  return inbox_->take(max, deadline);
}

}  // namespace kvdist::core
