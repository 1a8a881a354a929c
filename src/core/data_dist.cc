#include "kvdist/data_dist.h"

#include "core/engine.h"

namespace kvdist {

DataDist::DataDist(Role role, uint64_t cluster_id) : role_(role), cluster_id_(cluster_id) {}

DataDist::~DataDist() { finalize(); }

Status DataDist::init(const Options& options) {
  if (engine_) return Status();
  auto engine = core::Engine::start(role_, cluster_id_, options);
  if (!engine.ok()) return engine.status();
  engine_ = std::move(engine).value();
  cache_manager_ = std::make_unique<CacheManager>(engine_.get());
  return Status();
}

void DataDist::finalize() {
  if (!engine_) return;
  engine_->finalize();
  cache_manager_.reset();
  engine_.reset();
}

Role DataDist::role() const { return engine_ ? engine_->role() : role_; }

Status DataDist::switch_role(Role role, const std::string& listen_ip_info) {
  if (!engine_) return Status(StatusCode::kEngineFinalized, "not initialized");
  Status s = engine_->switch_role(role, listen_ip_info);
  if (s.ok()) role_ = role;
  return s;
}

uint16_t DataDist::listen_port() const { return engine_ ? engine_->listen_port() : 0; }

LinkResult DataDist::link_clusters(const std::vector<ClusterInfo>& clusters, int32_t timeout_ms) {
  if (!engine_) return {StatusCode::kEngineFinalized, {}, {}};
  return engine_->link(clusters, timeout_ms);
}

LinkResult DataDist::unlink_clusters(const std::vector<ClusterInfo>& clusters, int32_t timeout_ms) {
  if (!engine_) return {StatusCode::kEngineFinalized, {}, {}};
  return engine_->unlink(clusters, timeout_ms);
}

Status DataDist::check_link_status(uint64_t remote_cluster_id) {
  if (!engine_) return Status(StatusCode::kEngineFinalized, "not initialized");
  if (engine_->transport().connected(remote_cluster_id)) return Status();
  return Status(StatusCode::kNotYetLink,
                "cluster " + std::to_string(remote_cluster_id) + " is not linked");
}

std::vector<uint64_t> DataDist::linked_clusters() const {
  return engine_ ? engine_->transport().peers() : std::vector<uint64_t>{};
}

Status DataDist::send_message(uint64_t remote_cluster_id, const std::string& payload) {
  if (!engine_) return Status(StatusCode::kEngineFinalized, "not initialized");
  return engine_->send_message(remote_cluster_id, payload);
}

std::vector<PeerMessage> DataDist::receive_messages(size_t max_messages, int32_t timeout_ms) {
  if (!engine_) return {};
  return engine_->receive_messages(max_messages, timeout_ms);
}

uint64_t DataDist::dropped_messages() const { return engine_ ? engine_->inbox().dropped() : 0; }

CacheManager* DataDist::cache_manager() { return cache_manager_.get(); }

}  // namespace kvdist
