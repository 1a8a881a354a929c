// The handshake of a link (hello, its answer) and, on one host, the proof
// of the peer's pid that cross-process copies need.
#include <sys/random.h>
#include <unistd.h>

#include <climits>
#include <string>

#include "net/transport_impl.h"

namespace kvdist::net {

Message Transport::Impl::hello(MsgType type, uint64_t expected) const {
  Message m;
  m.type = type;
  m.cluster_id = options.cluster_id;
  m.expected_cluster_id = expected;
  m.host_id = my_host;
  m.worker_address = worker_address;
  m.regions = local_regions();
  return m;
}

void Transport::Impl::on_hello(ucp_ep_h ep, const Message& msg) {
  if (msg.expected_cluster_id != options.cluster_id) {
    refuse(ep, StatusCode::kLinkFailed,
           "this is cluster " + std::to_string(options.cluster_id) + ", not " +
               std::to_string(msg.expected_cluster_id));
    return;
  }
  if (!plausible_worker_address(msg.worker_address)) {
    refuse(ep, StatusCode::kLinkFailed, "the hello carries no UCX worker address");
    return;
  }
  auto peer = std::make_shared<Peer>();
  peer->cluster_id = msg.cluster_id;
  peer->ctrl = ep;
  ucs_status_t s = UCS_OK;
  peer->same_host = msg.host_id == my_host;
  peer->data = create_data_ep(msg.worker_address, peer->same_host, &s);
  if (peer->data == nullptr) {
    // Refused before it touches anything: a hello that cannot complete
    // must not take down the link of the cluster it claims to be.
    refuse(ep, StatusCode::kLinkFailed,
           std::string("cannot reach the client's worker: ") + ucs_status_string(s));
    return;
  }
  auto old = peers.find(msg.cluster_id);
  if (old != peers.end()) {
    // A new link from a known cluster replaces the old one (a restarted
    // peer whose death we have not noticed yet).
    fail_peer(old->second, Status(StatusCode::kLinkFailed,
                                  "cluster " + std::to_string(msg.cluster_id) + " relinked"));
  }
  peer->state = PeerState::kUp;
  add_remote_regions(*peer, msg.regions);
  peers[peer->cluster_id] = peer;
  by_ctrl[ep] = peer;
  send(ep, hello(MsgType::kHelloAck, msg.cluster_id));
  start_probe(peer);
}

bool Transport::Impl::plausible_worker_address(const std::string& a) {
  return a.size() > 9 && (static_cast<uint8_t>(a[0]) & 0xf) <= 1;
}

void Transport::Impl::on_hello_ack(const std::shared_ptr<Peer>& peer, const Message& msg) {
  if (peer->state != PeerState::kConnecting) return;
  if (!plausible_worker_address(msg.worker_address)) {
    fail_peer(peer, Status(StatusCode::kLinkFailed, "the listener sent no UCX worker address"));
    return;
  }
  if (msg.cluster_id != peer->cluster_id) {
    fail_peer(peer, Status(StatusCode::kLinkFailed, "the listener is cluster " +
                                                        std::to_string(msg.cluster_id) + ", not " +
                                                        std::to_string(peer->cluster_id)));
    return;
  }
  ucs_status_t s = UCS_OK;
  peer->same_host = msg.host_id == my_host;
  peer->data = create_data_ep(msg.worker_address, peer->same_host, &s);
  if (peer->data == nullptr) {
    fail_peer(peer, ucx_status(StatusCode::kLinkFailed, "cannot reach the listener's worker", s));
    return;
  }
  peer->state = PeerState::kUp;
  add_remote_regions(*peer, msg.regions);
  start_probe(peer);
  peer->connect_waiter->set(Status());
  peer->connect_waiter.reset();
}

void Transport::Impl::start_probe(const std::shared_ptr<Peer>& peer) {
  if (!direct_copy || !peer->same_host) return;
  std::string nonce(16, '\0');
  if (getrandom(nonce.data(), nonce.size(), 0) != static_cast<ssize_t>(nonce.size())) return;
  peer->probe_nonce = nonce;
  Message m;
  m.type = MsgType::kProbe;
  m.text = nonce;
  send(peer->ctrl, m);
}

void Transport::Impl::on_probe_ack(const std::shared_ptr<Peer>& peer, const Message& msg) {
  if (peer->probe_nonce.empty() || msg.code <= 0 || msg.code > INT32_MAX) return;
  std::string seen(peer->probe_nonce.size(), '\0');
  int err =
      mem::read_other_process(static_cast<pid_t>(msg.code), msg.value, seen.data(), seen.size());
  if (err == 0 && seen == peer->probe_nonce) peer->pid = static_cast<pid_t>(msg.code);
  peer->probe_nonce.clear();
}

}  // namespace kvdist::net
