// The active-message path: writes to a peer whose link has no native RMA
// (tcp between hosts; UCX 1.13 only emulates put there). The sender sends
// each range, or a batch of small ranges of one region, as an active
// message on the link's control endpoint; the RECEIVER places the bytes:
// after checking every range against a region it exposes and is not
// withdrawing, it receives a rendezvous message straight into the
// destination (ucp_am_recv_data_nbx) or copies an eager one into place,
// and confirms each write with a kDataAck once every message of it is in.
// A region is withdrawn only after the receives into it have ended.
#include <cstring>
#include <string>

#include "net/transport_impl.h"

namespace kvdist::net {
namespace {

// A range this long goes alone, in rendezvous: zero-copy into place.
constexpr uint64_t kSoloBytes = 256 * 1024;
// Smaller ranges of one region are batched up to this much, or this many.
constexpr uint64_t kBatchBytes = 1024 * 1024;
constexpr size_t kBatchRanges = kMaxDataRanges;
// Writes of one peer being received at once; more is a protocol violation.
constexpr size_t kMaxIncomingWrites = 4096;

// The error of a write the receiver refused (its check of the ranges).
Status refused(uint64_t cluster) {
  return Status(StatusCode::kParamInvalid,
                "cluster " + std::to_string(cluster) +
                    " refused the write: its destination is not (or no longer) memory it "
                    "registered");
}

// Copies consecutive bytes from `src` into each (address, length) in turn.
void scatter(const char* src, const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  for (const auto& [addr, len] : ranges) {
    std::memcpy(reinterpret_cast<void*>(addr), src, len);
    src += len;
  }
}

}  // namespace

// ---- sender ------------------------------------------------------------------

struct Transport::Impl::AmSend {
  std::string header;
  std::vector<ucp_dt_iov_t> iov;
  std::vector<char> staged;  // a batch gathered into one buffer
};

bool Transport::Impl::post_am_writes(uint64_t id, const std::shared_ptr<Peer>& peer,
                                     const std::vector<WriteOp>& ops, bool with_note) {
  // Messages: per region, ranges in order, adjacent ones merged; long ones
  // alone, short ones batched.
  struct Draft {
    uint64_t region_id;
    std::vector<WriteOp> ops;
    uint64_t bytes = 0;
  };
  std::vector<Draft> drafts;
  std::map<uint64_t, size_t> open_batch;  // region -> draft index being filled
  for (const WriteOp& op : ops) {
    if (op.len >= kSoloBytes) {
      drafts.push_back({op.region_id, {op}, op.len});
      continue;
    }
    auto it = open_batch.find(op.region_id);
    if (it != open_batch.end()) {
      Draft& d = drafts[it->second];
      WriteOp& last = d.ops.back();
      if (last.local_addr + last.len == op.local_addr &&
          last.remote_addr + last.len == op.remote_addr) {
        last.len += op.len;  // contiguous on both sides
      } else {
        d.ops.push_back(op);
      }
      d.bytes += op.len;
      if (d.bytes >= kBatchBytes || d.ops.size() >= kBatchRanges) open_batch.erase(it);
      continue;
    }
    open_batch[op.region_id] = drafts.size();
    drafts.push_back({op.region_id, {op}, op.len});
  }
  PendingWrite& w = writes.at(id);
  w.ack_pending = true;
  w.note_with_data = with_note && !w.note.empty() && w.note.size() <= kMaxDataNoteBytes;
  for (size_t i = 0; i < drafts.size(); ++i) {
    const Draft& d = drafts[i];
    DataHeader h;
    h.write_id = id;
    h.index = static_cast<uint32_t>(i);
    h.count = static_cast<uint32_t>(drafts.size());
    h.region_id = d.region_id;
    if (i == 0 && w.note_with_data) h.note = w.note;
    auto send = std::make_shared<AmSend>();
    for (const WriteOp& op : d.ops) {
      h.ranges.emplace_back(op.remote_addr, op.len);
      send->iov.push_back({reinterpret_cast<void*>(op.local_addr), op.len});
    }
    send->header = encode_data_header(h);
    // The header and list live until UCX is done with them, whatever
    // happens to the write.
    uint64_t op = add_op([this, id, send](ucs_status_t s) { am_sent(id, s); });
    ucp_request_param_t p{};
    p.op_attr_mask =
        UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    p.cb.send = on_send_done;
    p.user_data = this;
    p.flags = UCP_AM_SEND_FLAG_REPLY;
    const void* buffer = send->iov[0].buffer;
    size_t count = send->iov[0].length;
    if (send->iov.size() > 1) {
      // Gathered here: UCX 1.13 moves a contiguous rendezvous with tcp's
      // zero-copy put, but falls back to fragments for a list on the send
      // side (paged layers over loopback: 1.2 GB/s as a list, 2.4 gathered).
      send->staged.resize(d.bytes);
      char* at = send->staged.data();
      for (const ucp_dt_iov_t& v : send->iov) {
        std::memcpy(at, v.buffer, v.length);
        at += v.length;
      }
      buffer = send->staged.data();
      count = send->staged.size();
    }
    if (d.bytes >= kSoloBytes) p.flags |= UCP_AM_SEND_FLAG_RNDV;  // straight into place
    ++w.am_sends;
    track(ucp_am_send_nbx(peer->ctrl, kAmData, send->header.data(), send->header.size(), buffer,
                          count, &p),
          op);
  }
  return true;
}

void Transport::Impl::am_sent(uint64_t id, ucs_status_t s) {
  auto it = writes.find(id);
  if (it == writes.end()) return;
  PendingWrite& w = it->second;
  --w.am_sends;
  if (s == UCS_ERR_REJECTED) {
    // The receiver refused the ranges (not, or no longer, registered); its
    // acknowledgement says so too.
    if (w.status.ok()) w.status = refused(w.peer->cluster_id);
  } else if (s != UCS_OK) {
    std::shared_ptr<Peer> peer = w.peer;
    fail_peer(peer,
              ucx_status(StatusCode::kLinkFailed,
                         "send to cluster " + std::to_string(peer->cluster_id) + " failed", s));
  }
  maybe_complete(id);
}

void Transport::Impl::on_data_ack(const std::shared_ptr<Peer>& peer, const Message& msg) {
  auto it = writes.find(msg.value);
  if (it == writes.end() || it->second.peer != peer || !it->second.ack_pending) return;
  PendingWrite& w = it->second;
  w.ack_pending = false;
  if (msg.code != 0 && w.status.ok()) w.status = refused(peer->cluster_id);
  maybe_complete(msg.value);
}

// ---- receiver ----------------------------------------------------------------

struct Transport::Impl::AmRecv {
  Impl* self = nullptr;
  std::shared_ptr<Peer> peer;
  uint64_t write_id = 0;
  uint64_t region_id = 0;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // where the bytes go
  std::vector<char> staged;  // a batch, received whole, then copied into place
};

ucs_status_t Transport::Impl::on_am_data(void* arg, const void* header, size_t header_length,
                                         void* data, size_t length,
                                         const ucp_am_recv_param_t* param) {
  auto* self = static_cast<Impl*>(arg);
  bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  if (self->destroying || (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) == 0) {
    return rndv ? UCS_ERR_REJECTED : UCS_OK;
  }
  auto pit = self->by_ctrl.find(param->reply_ep);
  if (pit == self->by_ctrl.end() || pit->second->state != PeerState::kUp) {
    return rndv ? UCS_ERR_REJECTED : UCS_OK;
  }
  std::shared_ptr<Peer> peer = pit->second;
  DataHeader h;
  std::string_view hv(static_cast<const char*>(header), header_length);
  uint64_t total = 0;
  bool valid = decode_data_header(hv, &h);
  for (const auto& [addr, len] : h.ranges) total += len;
  if (valid) valid = total == length;
  Incoming* in = nullptr;
  if (valid) {
    auto [iit, fresh] = peer->incoming.try_emplace(h.write_id);
    in = &iit->second;
    if (fresh) in->count = h.count;
    if (!h.note.empty()) in->note = std::move(h.note);
    valid = in->count == h.count && peer->incoming.size() <= kMaxIncomingWrites;
  }
  if (!valid) {
    // Not something a kvdist peer sends: the link ends (not from inside
    // UCX's callback).
    self->worker->post([self, peer] {
      self->fail_peer(peer, Status(StatusCode::kLinkFailed, "malformed data message from cluster " +
                                                                std::to_string(peer->cluster_id)));
    });
    return rndv ? UCS_ERR_REJECTED : UCS_OK;
  }
  // Every range inside one region this side exposes and is not withdrawing.
  const auto* region = self->local.by_id(h.region_id);
  bool inside = region != nullptr && self->withdrawals.count(h.region_id) == 0;
  for (const auto& [addr, len] : h.ranges) {
    if (!inside) break;
    inside = addr >= region->base && addr + len <= region->base + region->len;
  }
  if (!inside) {
    self->data_message_done(peer, h.write_id, StatusCode::kParamInvalid);
    return rndv ? UCS_ERR_REJECTED : UCS_OK;
  }
  if (!rndv) {
    // Eager: the bytes are here; copy them into place.
    scatter(static_cast<const char*>(data), h.ranges);
    self->data_message_done(peer, h.write_id, StatusCode::kSuccess);
    return UCS_OK;
  }
  auto* recv = new AmRecv{self, peer, h.write_id, h.region_id, std::move(h.ranges), {}};
  ++self->recvs_in_flight[h.region_id];
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.cb.recv_am = on_data_received;
  p.user_data = recv;
  void* buffer = reinterpret_cast<void*>(recv->ranges[0].first);
  size_t count = length;
  if (recv->ranges.size() > 1) {
    // A batch is received whole (UCX then moves it with tcp's zero-copy
    // put) and copied into place: UCX 1.13 receives a list as 8 KiB
    // fragments (paged layers between namespaces: 1.05-1.55 GB/s that
    // way, 1.83-2.15 GB/s staged).
    recv->staged.resize(length);
    buffer = recv->staged.data();
  }
  ucs_status_ptr_t req = ucp_am_recv_data_nbx(self->worker->worker(), data, buffer, count, &p);
  if (req == nullptr) {
    on_data_received(nullptr, UCS_OK, length, recv);
  } else if (UCS_PTR_IS_ERR(req)) {
    on_data_received(nullptr, UCS_PTR_STATUS(req), 0, recv);
  }
  return UCS_OK;
}

void Transport::Impl::on_data_received(void* request, ucs_status_t status, size_t /*length*/,
                                       void* user_data) {
  auto* recv = static_cast<AmRecv*>(user_data);
  Impl* self = recv->self;
  if (request != nullptr) ucp_request_free(request);
  if (!self->destroying) {
    if (status == UCS_OK && !recv->staged.empty()) scatter(recv->staged.data(), recv->ranges);
    auto it = self->recvs_in_flight.find(recv->region_id);
    if (it != self->recvs_in_flight.end() && --it->second == 0) self->recvs_in_flight.erase(it);
    self->data_message_done(recv->peer, recv->write_id,
                            status == UCS_OK ? StatusCode::kSuccess : StatusCode::kLinkFailed);
    auto w = self->withdrawals.find(recv->region_id);
    if (w != self->withdrawals.end()) self->maybe_finish_withdrawal(w);
  }
  delete recv;
}

void Transport::Impl::data_message_done(const std::shared_ptr<Peer>& peer, uint64_t write_id,
                                        StatusCode code) {
  auto it = peer->incoming.find(write_id);
  if (it == peer->incoming.end()) return;
  Incoming& in = it->second;
  if (in.code == StatusCode::kSuccess) in.code = code;
  if (++in.received < in.count) return;
  StatusCode result = in.code;
  std::string note = std::move(in.note);
  peer->incoming.erase(it);
  if (peer->state != PeerState::kUp) return;
  // Every byte is in place: the layer above hears it now (the sender's
  // completion waits for the acknowledgement below).
  if (result == StatusCode::kSuccess && !note.empty() && events.on_note) {
    events.on_note(peer->cluster_id, std::move(note));
  }
  Message ack;
  ack.type = MsgType::kDataAck;
  ack.value = write_id;
  ack.code = static_cast<int64_t>(result);
  send(peer->ctrl, ack);
}

}  // namespace kvdist::net
