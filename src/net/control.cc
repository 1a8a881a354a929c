// Control messages: UCX requests with completions, sends, flushes, endpoint
// closes, and the dispatch of every control message that arrives.
#include <unistd.h>

#include <string>

#include "net/transport_impl.h"

namespace kvdist::net {

uint64_t Transport::Impl::add_op(std::function<void(ucs_status_t)> fn) {
  uint64_t id = next_id++;
  ops.emplace(id, std::move(fn));
  return id;
}

void Transport::Impl::on_send_done(void* request, ucs_status_t status, void* user_data) {
  auto* self = static_cast<Impl*>(user_data);
  auto it = self->request_ops.find(request);
  if (it == self->request_ops.end()) return;
  uint64_t op = it->second;
  self->request_ops.erase(it);
  ucp_request_free(request);
  if (!self->destroying) self->finish_op(op, status);
}

void Transport::Impl::finish_op(uint64_t op, ucs_status_t status) {
  auto it = ops.find(op);
  if (it == ops.end()) return;
  auto fn = std::move(it->second);
  ops.erase(it);
  fn(status);
}

void Transport::Impl::track(ucs_status_ptr_t req, uint64_t op) {
  if (req == nullptr) {
    finish_op(op, UCS_OK);
  } else if (UCS_PTR_IS_ERR(req)) {
    finish_op(op, UCS_PTR_STATUS(req));
  } else {
    request_ops.emplace(req, op);
  }
}

void Transport::Impl::flush(ucp_ep_h ep, std::function<void(ucs_status_t)> fn) {
  uint64_t op = add_op(std::move(fn));
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  p.cb.send = on_send_done;
  p.user_data = this;
  track(ucp_ep_flush_nbx(ep, &p), op);
}

void Transport::Impl::send(ucp_ep_h ep, const Message& msg) {
  auto buf = std::make_shared<std::string>(encode(msg));
  uint64_t op = add_op([buf](ucs_status_t) {});
  ucp_request_param_t p{};
  p.op_attr_mask =
      UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
  p.cb.send = on_send_done;
  p.user_data = this;
  p.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
  track(ucp_am_send_nbx(ep, kAmControl, nullptr, 0, buf->data(), buf->size(), &p), op);
}

void Transport::Impl::send_note(ucp_ep_h ep, std::string text) {
  Message m;
  m.type = MsgType::kNote;
  m.text = std::move(text);
  send(ep, m);
}

void Transport::Impl::close_ep(ucp_ep_h ep, bool force) {
  if (ep == nullptr) return;
  ucp_request_param_t p{};
  p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  p.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
  ucs_status_ptr_t req = ucp_ep_close_nbx(ep, &p);
  if (req != nullptr && !UCS_PTR_IS_ERR(req)) closing.push_back(req);
}

ucs_status_t Transport::Impl::on_am(void* arg, const void* /*header*/, size_t /*header_length*/,
                                    void* data, size_t length, const ucp_am_recv_param_t* param) {
  auto* self = static_cast<Impl*>(arg);
  if (self->destroying) return UCS_OK;
  if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0 ||
      (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) == 0) {
    return UCS_OK;  // we never send these: drop
  }
  ucp_ep_h ep = param->reply_ep;
  std::string bytes(static_cast<const char*>(data), length);
  self->worker->post([self, ep, bytes = std::move(bytes)] { self->handle(ep, bytes); });
  return UCS_OK;
}

void Transport::Impl::handle(ucp_ep_h ep, const std::string& bytes) {
  Message msg;
  bool valid = decode(bytes, &msg);
  if (accepting.count(ep) != 0) {
    on_handshake(ep, valid, msg);
    return;
  }
  auto it = by_ctrl.find(ep);
  if (it == by_ctrl.end()) return;  // closed meanwhile
  std::shared_ptr<Peer> peer = it->second;
  if (!valid) {
    fail_peer(peer, Status(StatusCode::kLinkFailed, "malformed control message from cluster " +
                                                        std::to_string(peer->cluster_id)));
    return;
  }
  switch (msg.type) {
    case MsgType::kHelloAck:
      on_hello_ack(peer, msg);
      break;
    case MsgType::kHelloNack:
      if (peer->connect_waiter) {
        peer->connect_waiter->set(Status(StatusCode::kLinkFailed, "refused: " + msg.text));
        peer->connect_waiter.reset();
      }
      fail_peer(peer, Status(StatusCode::kLinkFailed, "refused: " + msg.text));
      break;
    case MsgType::kRegionAdd:
      if (peer->state == PeerState::kUp) add_remote_regions(*peer, msg.regions);
      break;
    case MsgType::kRegionDel:
      on_region_del(peer, msg.value);
      break;
    case MsgType::kRegionDelAck: {
      auto w = withdrawals.find(msg.value);
      if (w != withdrawals.end()) {
        w->second.waiting.erase(peer->cluster_id);
        maybe_finish_withdrawal(w);
      }
      break;
    }
    case MsgType::kPing: {
      Message pong;
      pong.type = MsgType::kPong;
      pong.value = msg.value;
      send(peer->ctrl, pong);
      break;
    }
    case MsgType::kPong: {
      auto p = peer->pongs.find(msg.value);
      if (p != peer->pongs.end()) {
        auto fn = std::move(p->second);
        peer->pongs.erase(p);
        fn();
      }
      break;
    }
    case MsgType::kNote:
      if (events.on_note) events.on_note(peer->cluster_id, std::move(msg.text));
      break;
    case MsgType::kBye:
      fail_peer(peer, Status(StatusCode::kLinkFailed,
                             "cluster " + std::to_string(peer->cluster_id) + " unlinked"));
      break;
    case MsgType::kChallenge:
      on_challenge(peer, msg);
      break;
    case MsgType::kDataAck:
      on_data_ack(peer, msg);
      break;
    case MsgType::kHello:
    case MsgType::kAuth:
      fail_peer(peer, Status(StatusCode::kLinkFailed, "unexpected handshake"));
      break;
    case MsgType::kProbe: {
      if (peer->state != PeerState::kUp) break;
      peer->probe_echo = msg.text;  // kept while the link lives
      Message ack;
      ack.type = MsgType::kProbeAck;
      ack.value = reinterpret_cast<uint64_t>(peer->probe_echo.data());
      ack.code = getpid();
      send(peer->ctrl, ack);
      break;
    }
    case MsgType::kProbeAck:
      on_probe_ack(peer, msg);
      break;
  }
}

void Transport::notify(uint64_t peer_id, std::string note) {
  Impl* self = impl_.get();
  self->worker->post([self, peer_id, note = std::move(note)]() mutable {
    auto it = self->peers.find(peer_id);
    if (it == self->peers.end() || it->second->state != Impl::PeerState::kUp) return;
    Impl::Peer& peer = *it->second;
    if (!peer.writes.empty()) {
      peer.held_notes.emplace_back(*peer.writes.rbegin(), std::move(note));
      return;
    }
    self->send_note(peer.ctrl, std::move(note));
  });
}

}  // namespace kvdist::net
