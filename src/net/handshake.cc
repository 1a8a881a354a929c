// The handshake of a link (hello, its answer) and, on one host, the proof
// of the peer's pid that cross-process copies need.
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <string>

#include "net/auth.h"
#include "net/transport_impl.h"

namespace kvdist::net {

Message Transport::Impl::client_hello(Peer& peer) {
  peer.client_nonce = auth::random_nonce();
  Message m;
  m.type = MsgType::kHello;
  m.cluster_id = options.cluster_id;
  m.expected_cluster_id = peer.cluster_id;
  m.host_id = my_host;
  m.nonce = peer.client_nonce;
  m.value = secret.empty() ? 0 : kHelloHasSecret;
  return m;
}

void Transport::Impl::on_handshake(ucp_ep_h ep, bool valid, const Message& msg) {
  auto it = accepting.find(ep);
  Accepting& acc = it->second;
  bool expected = valid && (acc.server_nonce.empty() ? msg.type == MsgType::kHello
                                                     : msg.type == MsgType::kAuth);
  if (!expected) {
    refuse_handshake(ep,
                     "malformed handshake, a message out of order, or an unsupported "
                     "protocol version");
    return;
  }
  if (msg.type == MsgType::kHello) {
    on_hello(ep, acc, msg);
  } else {
    on_auth(ep, msg);
  }
}

void Transport::Impl::on_hello(ucp_ep_h ep, Accepting& acc, const Message& msg) {
  acc.hello = msg;  // who it claims to be, for the log
  if (msg.expected_cluster_id != options.cluster_id) {
    refuse_handshake(ep, "this is cluster " + std::to_string(options.cluster_id) + ", not " +
                             std::to_string(msg.expected_cluster_id));
    return;
  }
  if (msg.nonce.size() != auth::kNonceBytes) {
    refuse_handshake(ep, "the hello carries no nonce");
    return;
  }
  bool client_has_secret = (msg.value & kHelloHasSecret) != 0;
  if (!secret.empty() && !client_has_secret) {
    refuse_handshake(ep,
                     "authentication required: this listener has a shared secret "
                     "(kvdist.AuthSecret or KVDIST_AUTH_SECRET) and the client has none");
    return;
  }
  if (secret.empty() && client_has_secret) {
    refuse_handshake(ep,
                     "authentication impossible: the client has a shared secret "
                     "(kvdist.AuthSecret) and this listener has none");
    return;
  }
  acc.server_nonce = auth::random_nonce();
  if (acc.server_nonce.empty()) {
    refuse_handshake(ep, "no random nonce available");
    return;
  }
  Message challenge;
  challenge.type = MsgType::kChallenge;
  challenge.nonce = acc.server_nonce;
  send(ep, challenge);
}

void Transport::Impl::on_auth(ucp_ep_h ep, const Message& msg) {
  auto it = accepting.find(ep);
  const Accepting acc = std::move(it->second);
  const Message& hello = acc.hello;
  if (!secret.empty()) {
    std::string want = auth::proof(secret, auth::Role::kClient, hello.nonce, acc.server_nonce,
                                   hello.cluster_id, options.cluster_id, msg.worker_address);
    if (!auth::matches(want, msg.proof)) {
      // Nothing of the client's goes further: not its address, not its keys.
      refuse_handshake(ep,
                       "authentication failed: the client's proof does not match this "
                       "listener's shared secret (kvdist.AuthSecret differs)");
      return;
    }
  }
  if (!plausible_worker_address(msg.worker_address)) {
    refuse_handshake(ep, "the handshake carries no UCX worker address");
    return;
  }
  accepting.erase(ep);
  auto peer = std::make_shared<Peer>();
  peer->cluster_id = hello.cluster_id;
  peer->ctrl = ep;
  ucs_status_t s = UCS_OK;
  peer->same_host = !network_only && hello.host_id == my_host;
  peer->am_writes = am_writes && !(peer->same_host && shm_transports);
  peer->data = create_data_ep(msg.worker_address, peer->same_host, &s);
  if (peer->data == nullptr) {
    // Refused before it touches anything: a hello that cannot complete
    // must not take down the link of the cluster it claims to be.
    refuse(ep, StatusCode::kLinkFailed,
           std::string("cannot reach the client's worker: ") + ucs_status_string(s));
    return;
  }
  auto old = peers.find(hello.cluster_id);
  if (old != peers.end()) {
    // A new link from a known cluster replaces the old one (a restarted
    // peer whose death we have not noticed yet).
    fail_peer(old->second, Status(StatusCode::kLinkFailed,
                                  "cluster " + std::to_string(hello.cluster_id) + " relinked"));
  }
  peer->state = PeerState::kUp;
  add_remote_regions(*peer, msg.regions);
  peers[peer->cluster_id] = peer;
  by_ctrl[ep] = peer;
  Message ack;
  ack.type = MsgType::kHelloAck;
  ack.cluster_id = options.cluster_id;
  ack.expected_cluster_id = hello.cluster_id;
  ack.host_id = my_host;
  ack.proof = auth::proof(secret, auth::Role::kServer, hello.nonce, acc.server_nonce,
                          hello.cluster_id, options.cluster_id, worker_address);
  ack.worker_address = worker_address;
  ack.regions = local_regions();
  send(ep, ack);
  start_probe(peer);
}

void Transport::Impl::refuse_handshake(ucp_ep_h ep, const std::string& why) {
  auto it = accepting.find(ep);
  std::string from = it == accepting.end() ? std::string("?") : it->second.from;
  if (it != accepting.end() && it->second.hello.type == MsgType::kHello) {
    from += " (claims cluster " + std::to_string(it->second.hello.cluster_id) + ")";
  }
  if (it != accepting.end()) accepting.erase(it);
  log_refusal("refused a link from " + from + ": " + why);
  refuse(ep, StatusCode::kLinkFailed, why);
}

void Transport::Impl::log_refusal(const std::string& line) {
  // At most kBurst lines, then one per second: a flood of bad clients
  // must not flood the log.
  constexpr int kBurst = 20;
  auto now = Clock::now();
  if (refusal_log.logged >= kBurst && now - refusal_log.last < std::chrono::seconds(1)) {
    ++refusal_log.suppressed;
    return;
  }
  ++refusal_log.logged;
  refusal_log.last = now;
  std::string extra;
  if (refusal_log.suppressed > 0) {
    extra = " (" + std::to_string(refusal_log.suppressed) + " similar lines suppressed)";
    refusal_log.suppressed = 0;
  }
  std::fprintf(stderr, "kvdist: cluster %llu: %s%s\n",
               static_cast<unsigned long long>(options.cluster_id), line.c_str(), extra.c_str());
}

void Transport::Impl::on_challenge(const std::shared_ptr<Peer>& peer, const Message& msg) {
  if (peer->state != PeerState::kConnecting || peer->auth_sent) {
    fail_peer(peer, Status(StatusCode::kLinkFailed, "unexpected challenge"));
    return;
  }
  if (msg.nonce.size() != auth::kNonceBytes) {
    fail_peer(peer, Status(StatusCode::kLinkFailed, "the listener's challenge has no nonce"));
    return;
  }
  peer->server_nonce = msg.nonce;
  peer->auth_sent = true;
  Message m;
  m.type = MsgType::kAuth;
  m.proof = auth::proof(secret, auth::Role::kClient, peer->client_nonce, peer->server_nonce,
                        options.cluster_id, peer->cluster_id, worker_address);
  m.worker_address = worker_address;
  m.regions = local_regions();
  send(peer->ctrl, m);
}

bool Transport::Impl::plausible_worker_address(const std::string& a) {
  return a.size() > 9 && (static_cast<uint8_t>(a[0]) & 0xf) <= 1;
}

void Transport::Impl::on_hello_ack(const std::shared_ptr<Peer>& peer, const Message& msg) {
  if (peer->state != PeerState::kConnecting) return;
  if (!peer->auth_sent) {
    fail_peer(peer, Status(StatusCode::kLinkFailed, "the listener skipped the challenge"));
    return;
  }
  if (!secret.empty()) {
    std::string want =
        auth::proof(secret, auth::Role::kServer, peer->client_nonce, peer->server_nonce,
                    options.cluster_id, peer->cluster_id, msg.worker_address);
    if (!auth::matches(want, msg.proof)) {
      // Its address and keys go no further than this check.
      fail_peer(peer, Status(StatusCode::kLinkFailed,
                             "authentication failed: the listener did not prove the shared "
                             "secret (kvdist.AuthSecret differs between the two sides)"));
      return;
    }
  }
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
  peer->same_host = !network_only && msg.host_id == my_host;
  peer->am_writes = am_writes && !(peer->same_host && shm_transports);
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
  std::string nonce = auth::random_nonce();
  if (nonce.empty()) return;
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
