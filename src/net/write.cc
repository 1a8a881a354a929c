// Writes: every range checked against the peer's regions before anything
// is posted, the parts of a write tracked, its completion and its note.
#include <cstdio>
#include <string>

#include "net/transport_impl.h"

namespace kvdist::net {

// "destination [0x..., +len)", as the errors about a peer's memory say it.
std::string destination_text(uint64_t addr, uint64_t len) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "destination [0x%llx, +%llu)",
                static_cast<unsigned long long>(addr), static_cast<unsigned long long>(len));
  return buf;
}

void Transport::Impl::maybe_complete(uint64_t id) {
  auto it = writes.find(id);
  if (it == writes.end()) return;
  const PendingWrite& w = it->second;
  if (w.flush_pending || w.batch_pending || w.am_sends > 0 || w.ack_pending) return;
  if (w.peer->state == PeerState::kDown && w.peer->data != nullptr)
    return;                  // teardown completes it
  Status status = w.status;  // complete_write erases w
  complete_write(id, status);
}

void Transport::Impl::complete_write(uint64_t id, Status s) {  // by value: s may live in the write
  auto it = writes.find(id);
  if (it == writes.end()) return;
  PendingWrite w = std::move(it->second);
  writes.erase(it);
  w.peer->writes.erase(id);
  if (s.ok() && !w.note.empty() && !w.note_with_data && w.peer->state == PeerState::kUp) {
    send_note(w.peer->ctrl, std::move(w.note));
  }
  if (w.peer->state == PeerState::kUp) release_notes(*w.peer);
  w.done(s);
}

void Transport::Impl::release_notes(Peer& peer) {
  while (!peer.held_notes.empty() &&
         (peer.writes.empty() || *peer.writes.begin() > peer.held_notes.front().first)) {
    std::string note = std::move(peer.held_notes.front().second);
    peer.held_notes.pop_front();
    send_note(peer.ctrl, std::move(note));
  }
}

void Transport::write(uint64_t peer_id, std::vector<WriteOp> ops, std::string note,
                      std::function<void(const Status&)> done) {
  Impl* self = impl_.get();
  auto run = [self, peer_id, ops = std::move(ops), note = std::move(note), done]() mutable {
    auto it = self->peers.find(peer_id);
    if (it == self->peers.end() || it->second->state != Impl::PeerState::kUp) {
      done(Status(StatusCode::kLinkFailed,
                  "cluster " + std::to_string(peer_id) + " is not linked (or its link failed)"));
      return;
    }
    std::shared_ptr<Impl::Peer> peer = it->second;
    std::vector<const mem::RegionTable<Impl::RemoteRegion>::Region*> regions;
    regions.reserve(ops.size());
    for (const WriteOp& op : ops) {
      const auto* region = peer->remote.find(op.remote_addr, op.len);
      if (region != nullptr && op.region_id != 0 && region->id != op.region_id) {
        done(Status(StatusCode::kParamInvalid,
                    destination_text(op.remote_addr, op.len) + " is no longer the memory cluster " +
                        std::to_string(peer_id) +
                        " registered when the transfer started (freed and registered again)"));
        return;
      }
      if (region == nullptr) {
        done(Status(StatusCode::kParamInvalid, destination_text(op.remote_addr, op.len) +
                                                   " is not (or no longer) memory cluster " +
                                                   std::to_string(peer_id) + " registered"));
        return;
      }
      regions.push_back(region);
    }
    uint64_t id = self->next_id++;
    Impl::PendingWrite pw;
    pw.peer = peer;
    pw.note = std::move(note);
    pw.done = std::move(done);
    pw.deadline = Clock::now() + self->options.write_timeout;
    self->writes.emplace(id, std::move(pw));
    peer->writes.insert(id);
    // Each range goes the way its memory allows: copies on this host, the
    // network path for the rest.
    std::vector<mem::CopyPiece> copies;
    std::vector<std::pair<WriteOp, ucp_rkey_h>> puts;
    std::vector<WriteOp> messages;
    for (size_t i = 0; i < ops.size(); ++i) {
      const WriteOp& op = ops[i];
      const auto& region = *regions[i];
      const auto* src = reinterpret_cast<const void*>(op.local_addr);
      if (region.payload.mapped != nullptr) {
        // The peer's shared memory, mapped here.
        copies.push_back({region.payload.mapped + (op.remote_addr - region.base), src, op.len, 0});
      } else if (peer->pid != 0) {
        // The peer's own memory, on this host, its pid proved.
        copies.push_back({reinterpret_cast<void*>(op.remote_addr), src, op.len, peer->pid});
      } else if (peer->am_writes) {
        WriteOp pinned = op;
        pinned.region_id = region.id;  // the receiver checks it
        messages.push_back(pinned);
      } else {
        puts.emplace_back(op, region.payload.rkey);
      }
    }
    if (!messages.empty() &&
        !self->post_am_writes(id, peer, messages, copies.empty() && puts.empty())) {
      return;
    }
    if (!puts.empty() && !self->post_puts(id, peer, puts)) return;
    // Last: the batch may finish (and complete the write) inside.
    if (!copies.empty()) {
      self->post_copies(id, peer, std::move(copies));
      return;
    }
    self->maybe_complete(id);
  };
  if (!self->worker->post(std::move(run))) {
    done(Status(StatusCode::kEngineFinalized, "transport stopped"));
  }
}

}  // namespace kvdist::net
