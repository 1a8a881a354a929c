// Memory: what this side maps and exposes to its peers (and withdraws, with
// their confirmation), and the region tables of the peers' memory.
#include <string>

#include "net/transport_impl.h"

namespace kvdist::net {

void Transport::Impl::add_remote_regions(Peer& peer, const std::vector<RegionInfo>& regions) {
  for (const RegionInfo& r : regions) {
    RemoteRegion region;
    if (ucp_ep_rkey_unpack(peer.data, r.rkey.data(), &region.rkey) != UCS_OK) continue;
    void* mapped = nullptr;
    // Only on this host: a key of another host's shared memory must never
    // be attached here (UCX would not offer it, and we do not ask).
    if (direct_copy && peer.same_host && ucp_rkey_ptr(region.rkey, r.base, &mapped) == UCS_OK) {
      region.mapped = static_cast<char*>(mapped);
    }
    if (!peer.remote.add(r.id, r.base, r.len, region)) ucp_rkey_destroy(region.rkey);
  }
}

bool Transport::Impl::knows_regions(const Peer& peer) {
  // A client's table went out with its proof; the listener's with its
  // answer, once the peer is up. Messages after either arrive after it.
  return peer.state == PeerState::kUp || (peer.state == PeerState::kConnecting && peer.auth_sent);
}

std::vector<RegionInfo> Transport::Impl::local_regions() const {
  std::vector<RegionInfo> out;
  local.for_each([&](const auto& r) {
    if (withdrawals.count(r.id) == 0) out.push_back({r.id, r.base, r.len, r.payload.rkey});
  });
  return out;
}

std::map<uint64_t, Transport::Impl::Withdrawal>::iterator Transport::Impl::maybe_finish_withdrawal(
    std::map<uint64_t, Withdrawal>::iterator it) {
  if (!it->second.waiting.empty() || recvs_in_flight.count(it->first) != 0) return std::next(it);
  auto done = std::move(it->second.done);
  local.remove(it->first);
  auto next = withdrawals.erase(it);
  if (done) done();
  return next;
}

void Transport::Impl::on_region_del(const std::shared_ptr<Peer>& peer, uint64_t region_id) {
  RemoteRegion removed;
  bool known = peer->remote.remove(region_id, &removed);
  if (peer->lane_batches > 0) {
    // Copies may be running into it: confirm once they have returned.
    peer->after_lanes.push_back([this, peer, region_id, known, removed] {
      finish_region_del(peer, region_id, known, removed);
    });
    return;
  }
  finish_region_del(peer, region_id, known, removed);
}

void Transport::Impl::finish_region_del(const std::shared_ptr<Peer>& peer, uint64_t region_id,
                                        bool known, RemoteRegion removed) {
  ucp_rkey_h rkey = removed.rkey;
  uint64_t cluster = peer->cluster_id;
  auto ack = [this, peer, region_id, rkey, known, cluster](ucs_status_t) {
    if (known) ucp_rkey_destroy(rkey);
    if (peer->state != PeerState::kUp) return;
    Message m;
    m.type = MsgType::kRegionDelAck;
    m.value = region_id;
    send(peer->ctrl, m);
    (void)cluster;
  };
  // Everything posted into the region before now is complete once the data
  // endpoint is flushed; only then may the owner reuse the memory.
  if (peer->data != nullptr) {
    flush(peer->data, ack);
  } else {
    ack(UCS_OK);
  }
}

namespace {

Result<MappedMemory> map_on_worker(Transport::Impl* self, uint64_t addr, uint64_t len,
                                   bool allocate) {
  Status status(StatusCode::kFailed, "not run");
  MappedMemory out;
  Status ran = self->worker->run_sync(
      [&] {
        ucp_mem_map_params_t p{};
        p.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                       UCP_MEM_MAP_PARAM_FIELD_FLAGS;
        p.address = allocate ? nullptr : reinterpret_cast<void*>(addr);
        p.length = len;
        p.flags = allocate ? UCP_MEM_MAP_ALLOCATE : 0;
        ucp_mem_h memh = nullptr;
        ucs_status_t s = ucp_mem_map(self->worker->context(), &p, &memh);
        if (s != UCS_OK) {
          status = ucx_status(allocate ? StatusCode::kDeviceOutOfMemory : StatusCode::kFailed,
                              "ucp_mem_map of " + std::to_string(len) + " bytes", s);
          return;
        }
        ucp_mem_attr_t attr{};
        attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
        ucp_mem_query(memh, &attr);
        void* rkey_buf = nullptr;
        size_t rkey_len = 0;
        s = ucp_rkey_pack(self->worker->context(), memh, &rkey_buf, &rkey_len);
        if (s != UCS_OK) {
          ucp_mem_unmap(self->worker->context(), memh);
          status = ucx_status(StatusCode::kFailed, "ucp_rkey_pack", s);
          return;
        }
        Transport::Impl::Memory m;
        m.memh = memh;
        m.base = reinterpret_cast<uint64_t>(attr.address);
        m.len = attr.length;
        m.rkey.assign(static_cast<const char*>(rkey_buf), rkey_len);
        ucp_rkey_buffer_release(rkey_buf);
        out.mem_id = self->next_id++;
        out.base = m.base;
        out.len = m.len;
        self->memory.emplace(out.mem_id, std::move(m));
        status = Status();
      },
      kSyncTimeout);
  if (!ran.ok()) return ran;
  if (!status.ok()) return status;
  return out;
}

}  // namespace

Result<MappedMemory> Transport::map_memory(uint64_t len) {
  return map_on_worker(impl_.get(), 0, len, true);
}

Result<MappedMemory> Transport::register_memory(uint64_t addr, uint64_t len) {
  return map_on_worker(impl_.get(), addr, len, false);
}

void Transport::unmap_memory(uint64_t mem_id) {
  Impl* self = impl_.get();
  self->worker->post([self, mem_id] {
    auto it = self->memory.find(mem_id);
    if (it == self->memory.end()) return;
    ucp_mem_unmap(self->worker->context(), it->second.memh);
    self->memory.erase(it);
  });
}

Result<uint64_t> Transport::expose(uint64_t mem_id, uint64_t base, uint64_t len) {
  Impl* self = impl_.get();
  Status status;
  uint64_t region_id = 0;
  Status ran = self->worker->run_sync(
      [&] {
        auto it = self->memory.find(mem_id);
        if (it == self->memory.end() || base < it->second.base ||
            base + len > it->second.base + it->second.len) {
          status = Status(StatusCode::kParamInvalid, "region outside its registered memory");
          return;
        }
        region_id = self->next_id++;
        if (!self->local.add(region_id, base, len, Impl::LocalRegion{mem_id, it->second.rkey})) {
          status = Status(StatusCode::kParamInvalid, "region overlaps an exposed region");
          return;
        }
        Message m;
        m.type = MsgType::kRegionAdd;
        m.regions.push_back({region_id, base, len, it->second.rkey});
        for (auto& [id, peer] : self->peers) {
          if (Impl::knows_regions(*peer)) self->send(peer->ctrl, m);
        }
      },
      kSyncTimeout);
  if (!ran.ok()) return ran;
  if (!status.ok()) return status;
  return region_id;
}

void Transport::withdraw(uint64_t region_id, std::function<void()> done) {
  Impl* self = impl_.get();
  auto run = [self, region_id, done] {
    if (self->local.by_id(region_id) == nullptr || self->withdrawals.count(region_id) != 0) {
      if (done) done();
      return;
    }
    Impl::Withdrawal w;
    w.done = done;
    w.deadline = Clock::now() + self->options.write_timeout;
    Message m;
    m.type = MsgType::kRegionDel;
    m.value = region_id;
    for (auto& [id, peer] : self->peers) {
      if (!Impl::knows_regions(*peer)) continue;
      w.waiting.insert(id);
      self->send(peer->ctrl, m);
    }
    auto it = self->withdrawals.emplace(region_id, std::move(w)).first;
    self->maybe_finish_withdrawal(it);
  };
  if (!self->worker->post(run) && done) done();
}

Status Transport::check_remote(uint64_t peer_id,
                               const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
                               std::chrono::milliseconds timeout,
                               std::vector<uint64_t>* region_ids) {
  Impl* self = impl_.get();
  auto waiter = std::make_shared<Waiter>();
  // Filled before the waiter is set; outlives a caller that gave up.
  auto ids = std::make_shared<std::vector<uint64_t>>();
  // Runs on the progress thread; `ranges` is copied for the pong path.
  auto check = [self, peer_id, ranges, ids](bool final_try,
                                            const std::shared_ptr<Waiter>& w) -> bool {
    auto it = self->peers.find(peer_id);
    if (it == self->peers.end() || it->second->state != Impl::PeerState::kUp) {
      w->set(
          Status(StatusCode::kNotYetLink, "cluster " + std::to_string(peer_id) + " is not linked"));
      return true;
    }
    ids->clear();
    for (const auto& [addr, len] : ranges) {
      const auto* region = it->second->remote.find(addr, len);
      if (region != nullptr) ids->push_back(region->id);
      if (region == nullptr) {
        if (!final_try) return false;
        w->set(Status(StatusCode::kParamInvalid, destination_text(addr, len) +
                                                     " is outside the memory cluster " +
                                                     std::to_string(peer_id) + " registered"));
        return true;
      }
    }
    w->set(Status());
    return true;
  };
  Status ran = self->worker->run_sync(
      [&] {
        if (check(false, waiter)) return;
        auto& peer = self->peers[peer_id];
        uint64_t seq = peer->next_ping++;
        peer->pongs[seq] = [check, waiter] { check(true, waiter); };
        Message ping;
        ping.type = MsgType::kPing;
        ping.value = seq;
        self->send(peer->ctrl, ping);
      },
      kSyncTimeout);
  if (!ran.ok()) return ran;
  Status s = waiter->wait(timeout, "region table refresh");
  if (s.ok() && region_ids != nullptr) *region_ids = *ids;
  return s;
}

}  // namespace kvdist::net
