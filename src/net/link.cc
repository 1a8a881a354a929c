// Links to peers: the client and server endpoints, a failed endpoint, the
// end of a link (orderly or not) and the teardown of its data side.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <cstdlib>
#include <string>

#include "net/transport_impl.h"

namespace kvdist::net {

void Transport::Impl::on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status) {
  auto* self = static_cast<Impl*>(arg);
  if (self->destroying) return;
  // The peer is looked up now: by the time the closure runs, the endpoint
  // may be closed and its address reused by a new link's endpoint.
  std::shared_ptr<Peer> owner;
  bool looked_up = self->worker->on_progress_thread();
  if (looked_up) owner = self->peer_of(ep);
  // Not inside UCX's callback: closing endpoints there is not allowed.
  self->worker->post([self, ep, status, owner, looked_up] {
    self->endpoint_failed(ep, status, owner, looked_up);
  });
}

std::shared_ptr<Transport::Impl::Peer> Transport::Impl::peer_of(ucp_ep_h ep) {
  for (auto& [id, peer] : peers) {
    if (peer->ctrl == ep || peer->data == ep) return peer;
  }
  return nullptr;
}

void Transport::Impl::endpoint_failed(ucp_ep_h ep, ucs_status_t status, std::shared_ptr<Peer> owner,
                                      bool looked_up) {
  auto acc = accepting.find(ep);
  if (owner == nullptr && acc != accepting.end()) {
    accepting.erase(acc);
    close_ep(ep, true);
    return;
  }
  std::shared_ptr<Peer> failed = looked_up ? owner : peer_of(ep);
  if (failed) {
    fail_peer(
        failed,
        ucx_status(StatusCode::kLinkFailed,
                   "link to cluster " + std::to_string(failed->cluster_id) + " failed", status));
  }
}

ucp_ep_h Transport::Impl::create_data_ep(const std::string& address, bool same_host,
                                         ucs_status_t* status) {
  ucp_ep_params_t p{};
  p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
  p.address = reinterpret_cast<const ucp_address_t*>(address.data());
  bool want_peer_errors = !same_host;
  const char* forced = std::getenv("KVDIST_DATA_EP_ERROR_HANDLING");
  if (forced != nullptr) want_peer_errors = std::string(forced) == "peer";
  p.err_mode = want_peer_errors ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
  if (want_peer_errors) {
    p.field_mask |= UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.err_handler.cb = on_ep_error;
    p.err_handler.arg = this;
  }
  ucp_ep_h ep = nullptr;
  *status = ucp_ep_create(worker->worker(), &p, &ep);
  return *status == UCS_OK ? ep : nullptr;
}

void Transport::Impl::fail_peer(std::shared_ptr<Peer> peer, const Status& why, bool orderly) {
  if (peer->state == PeerState::kDown) return;
  bool was_up = peer->state == PeerState::kUp;
  peer->state = PeerState::kDown;
  by_ctrl.erase(peer->ctrl);
  auto it = peers.find(peer->cluster_id);
  if (it != peers.end() && it->second == peer) peers.erase(it);
  close_ep(peer->ctrl, !orderly);
  peer->ctrl = nullptr;
  peer->down_why = why;
  for (uint64_t id : peer->writes) {
    PendingWrite& w = writes.at(id);
    if (w.status.ok()) w.status = why;
    if (w.batch_pending) mem::CopyLanes::cancel(w.batch);
    w.ack_pending = false;  // it will not come
  }
  // Copies still running into the peer's memory hold its mappings: the
  // data side ends when they have returned.
  if (peer->lane_batches == 0) {
    teardown_data(peer);
  } else {
    peer->teardown_pending = true;
  }
  // Pending check_remote calls re-check now: the peer is gone, so they
  // answer kNotYetLink at once instead of at their deadline.
  auto pongs = std::move(peer->pongs);
  peer->pongs.clear();
  for (auto& [seq, fn] : pongs) fn();
  for (auto wit = withdrawals.begin(); wit != withdrawals.end();) {
    wit->second.waiting.erase(peer->cluster_id);
    wit = maybe_finish_withdrawal(wit);
  }
  if (peer->connect_waiter) peer->connect_waiter->set(why);
  peer->connect_waiter.reset();
  if (was_up && events.on_peer_down) {
    size_t left = 0;
    for (auto& [id, p] : peers) left += p->state == PeerState::kUp ? 1 : 0;
    events.on_peer_down(peer->cluster_id, why, left);
  }
}

void Transport::Impl::teardown_data(const std::shared_ptr<Peer>& peer) {
  peer->teardown_pending = false;
  peer->remote.for_each([](const auto& r) { ucp_rkey_destroy(r.payload.rkey); });
  peer->remote.clear();
  // Force-closing cancels every outstanding put and flush of the peer:
  // after this no write of ours can still land there.
  close_ep(peer->data, true);
  peer->data = nullptr;
  // A write whose messages UCX still holds completes when they return
  // (their source must stay valid until then).
  for (uint64_t w : std::set<uint64_t>(peer->writes)) {
    if (writes.at(w).am_sends == 0) complete_write(w, peer->down_why);
  }
}

void Transport::Impl::unlink(const std::shared_ptr<Peer>& peer, const Status& why) {
  bool up = peer->state == PeerState::kUp;
  if (up) {
    Message bye;
    bye.type = MsgType::kBye;
    send(peer->ctrl, bye);
  }
  fail_peer(peer, why, up);
}

void Transport::Impl::on_conn_request(ucp_conn_request_h request, void* arg) {
  auto* self = static_cast<Impl*>(arg);
  if (self->destroying) return;
  self->worker->post([self, request] { self->accept(request); });
}

void Transport::Impl::accept(ucp_conn_request_h request) {
  ucp_ep_params_t p{};
  p.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                 UCP_EP_PARAM_FIELD_ERR_HANDLER;
  p.conn_request = request;
  p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
  p.err_handler.cb = on_ep_error;
  p.err_handler.arg = this;
  ucp_ep_h ep = nullptr;
  Accepting acc;
  acc.deadline = Clock::now() + options.accept_timeout;
  ucp_conn_request_attr_t attr{};
  attr.field_mask = UCP_CONN_REQUEST_ATTR_FIELD_CLIENT_ADDR;
  if (ucp_conn_request_query(request, &attr) == UCS_OK &&
      attr.client_address.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&attr.client_address);
    char ip[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
    acc.from = std::string(ip) + ":" + std::to_string(ntohs(in->sin_port));
  }
  if (ucp_ep_create(worker->worker(), &p, &ep) != UCS_OK) return;
  accepting.emplace(ep, std::move(acc));
}

void Transport::Impl::refuse(ucp_ep_h ep, StatusCode code, const std::string& text) {
  Message nack;
  nack.type = MsgType::kHelloNack;
  nack.code = static_cast<int64_t>(code);
  nack.text = text;
  send(ep, nack);
  // Flush-mode close: the refusal reaches the client before the end.
  close_ep(ep, false);
}

Status Transport::connect(uint64_t peer_id, const std::string& ip, uint16_t port,
                          std::chrono::milliseconds timeout) {
  Impl* self = impl_.get();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  if (inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) {
    return Status(StatusCode::kParamInvalid, "'" + ip + "' is not an IPv4 address");
  }
  auto waiter = std::make_shared<Waiter>();
  Status ran = self->worker->run_sync(
      [&] {
        auto existing = self->peers.find(peer_id);
        if (existing != self->peers.end()) {
          waiter->set(Status(existing->second->state == Impl::PeerState::kUp
                                 ? StatusCode::kAlreadyLink
                                 : StatusCode::kProcessingLink,
                             "cluster " + std::to_string(peer_id) + " is already linked"));
          return;
        }
        ucp_ep_params_t p{};
        p.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                       UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
        p.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
        p.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
        p.sockaddr.addrlen = sizeof(addr);
        p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
        p.err_handler.cb = Impl::on_ep_error;
        p.err_handler.arg = self;
        ucp_ep_h ep = nullptr;
        ucs_status_t s = ucp_ep_create(self->worker->worker(), &p, &ep);
        if (s != UCS_OK) {
          waiter->set(ucx_status(StatusCode::kLinkFailed,
                                 "cannot connect to " + ip + ":" + std::to_string(port), s));
          return;
        }
        auto peer = std::make_shared<Impl::Peer>();
        peer->cluster_id = peer_id;
        peer->ctrl = ep;
        peer->connect_waiter = waiter;
        peer->connect_deadline = Clock::now() + timeout;
        self->peers[peer_id] = peer;
        self->by_ctrl[ep] = peer;
        self->send(ep, self->client_hello(*peer));
      },
      kSyncTimeout);
  if (!ran.ok()) return ran;
  // The progress thread enforces `timeout`; the margin covers its tick.
  Status s = waiter->wait(timeout + std::chrono::milliseconds(500), "link");
  if (s.code() == StatusCode::kTimeout) s = Status(StatusCode::kLinkFailed, s.message());
  return s;
}

Status Transport::disconnect(uint64_t peer_id, std::chrono::milliseconds timeout) {
  Impl* self = impl_.get();
  Status status;
  Status ran = self->worker->run_sync(
      [&] {
        auto it = self->peers.find(peer_id);
        if (it == self->peers.end()) {
          status = Status(StatusCode::kNotYetLink,
                          "cluster " + std::to_string(peer_id) + " is not linked");
          return;
        }
        self->unlink(it->second, Status(StatusCode::kLinkFailed,
                                        "unlinked from cluster " + std::to_string(peer_id)));
      },
      // The unlink itself never blocks the progress thread; the caller's
      // timeout bounds the endpoints' orderly close, which runs on.
      kSyncTimeout);
  (void)timeout;
  if (!ran.ok()) return ran;
  return status;
}

bool Transport::connected(uint64_t peer_id) {
  Impl* self = impl_.get();
  bool up = false;
  self->worker->run_sync(
      [&] {
        auto it = self->peers.find(peer_id);
        up = it != self->peers.end() && it->second->state == Impl::PeerState::kUp;
      },
      kSyncTimeout);
  return up;
}

std::vector<uint64_t> Transport::peers() {
  Impl* self = impl_.get();
  std::vector<uint64_t> out;
  self->worker->run_sync(
      [&] {
        for (auto& [id, peer] : self->peers) {
          if (peer->state == Impl::PeerState::kUp) out.push_back(id);
        }
      },
      kSyncTimeout);
  return out;
}

}  // namespace kvdist::net
