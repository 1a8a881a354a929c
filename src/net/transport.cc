// net::Transport: start (context, worker, listener), shutdown, and the
// deadlines the progress thread enforces every tick.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "net/auth.h"
#include "net/transport_impl.h"

namespace kvdist::net {

namespace {

constexpr std::chrono::milliseconds kTick{20};

std::string host_id() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  std::string id = name;
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::string boot_id;
  std::getline(boot, boot_id);
  return id + "/" + boot_id;
}

// An RDMA device (verbs): puts are native there, so writes stay puts.
bool rdma_present() {
  std::error_code ec;
  std::filesystem::directory_iterator it("/sys/class/infiniband", ec);
  return !ec && it != std::filesystem::directory_iterator();
}

// 127.0.0.0/8: only this host can reach a listener there.
bool loopback(const std::string& ip) { return ip.rfind("127.", 0) == 0; }

// Whether UCX_TLS lets peers on this host share memory. A list naming no
// shared-memory transport (e.g. "tcp") asks for the network path: kvdist's
// own copies into a peer then stay off too.
bool tls_allows_shared_memory() {
  const char* tls = std::getenv("UCX_TLS");
  if (tls == nullptr || *tls == '\0') return true;
  std::string list = tls;
  bool exclude = list[0] == '^';
  if (exclude) list.erase(0, 1);
  bool named = false;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t end = list.find(',', pos);
    if (end == std::string::npos) end = list.size();
    std::string t = list.substr(pos, end - pos);
    if (t == "all" || t == "sm" || t == "shm" || t == "cma" || t == "posix" || t == "sysv" ||
        t == "xpmem" || t == "knem") {
      named = true;
    }
    pos = end + 1;
  }
  return exclude ? !named : named;
}

}  // namespace

void Transport::Impl::tick() {
  auto now = Clock::now();
  for (auto it = accepting.begin(); it != accepting.end();) {
    if (it->second.deadline <= now) {
      close_ep(it->first, true);
      it = accepting.erase(it);
    } else {
      ++it;
    }
  }
  std::vector<std::shared_ptr<Peer>> expired;
  for (auto& [id, peer] : peers) {
    if (peer->state == PeerState::kConnecting && peer->connect_deadline <= now) {
      expired.push_back(peer);
    }
  }
  for (auto& peer : expired) {
    fail_peer(peer, Status(StatusCode::kLinkFailed,
                           "link to cluster " + std::to_string(peer->cluster_id) + " timed out"));
  }
  std::vector<std::shared_ptr<Peer>> late;
  for (auto& [id, w] : writes) {
    if (w.deadline <= now) late.push_back(w.peer);
  }
  for (auto& peer : late) {
    if (peer->state == PeerState::kDown) continue;
    fail_peer(peer, Status(StatusCode::kTimeout,
                           "writes to cluster " + std::to_string(peer->cluster_id) +
                               " not confirmed within " +
                               std::to_string(options.write_timeout.count()) + " ms"));
  }
  std::set<uint64_t> silent;
  for (auto& [id, w] : withdrawals) {
    if (w.deadline <= now) silent.insert(w.waiting.begin(), w.waiting.end());
  }
  for (uint64_t cluster : silent) {
    auto it = peers.find(cluster);
    if (it == peers.end()) continue;
    fail_peer(it->second, Status(StatusCode::kTimeout,
                                 "cluster " + std::to_string(cluster) +
                                     " did not confirm a withdrawn region within " +
                                     std::to_string(options.write_timeout.count()) + " ms"));
  }
  for (auto it = closing.begin(); it != closing.end();) {
    if (ucp_request_check_status(*it) != UCS_INPROGRESS) {
      ucp_request_free(*it);
      it = closing.erase(it);
    } else {
      ++it;
    }
  }
}

// ---- Transport --------------------------------------------------------------

Transport::Transport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Transport::~Transport() { shutdown(); }

Result<std::unique_ptr<Transport>> Transport::start(const TransportOptions& options,
                                                    TransportEvents events) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->events = std::move(events);
  impl->my_host = host_id();
  if (const char* net = std::getenv("KVDIST_NETWORK_PATH")) {
    if (std::string(net) == "1") impl->network_only = true;
  }
  if (options.network_only) impl->network_only = true;
  impl->shm_transports = tls_allows_shared_memory() && !impl->network_only;
  // Our own copies need what shared memory needs.
  impl->direct_copy = impl->shm_transports;
  if (const char* direct = std::getenv("KVDIST_DIRECT_COPY")) {
    if (std::string(direct) == "0") impl->direct_copy = false;
  }
  impl->am_writes = !rdma_present();
  if (const char* mode = std::getenv("KVDIST_NETWORK_WRITES")) {
    if (std::string(mode) == "put") impl->am_writes = false;
    if (std::string(mode) == "am") impl->am_writes = true;
  }
  impl->secret =
      options.auth_secret.empty() ? auth::secret_from_environment() : options.auth_secret;
  if (options.listen && impl->secret.empty() && !loopback(options.listen_ip)) {
    static std::once_flag warned;
    std::call_once(warned, [&] {
      std::fprintf(stderr,
                   "kvdist: warning: listening on %s without a shared secret: anyone who can "
                   "reach it can link and write into exposed memory. Set kvdist.AuthSecret "
                   "(or KVDIST_AUTH_SECRET) on every side (docs/deployment.md).\n",
                   options.listen_ip.c_str());
    });
  }
  unsigned lanes = options.copy_lanes;
  if (const char* env = std::getenv("KVDIST_COPY_LANES")) {
    lanes = static_cast<unsigned>(std::strtoul(env, nullptr, 10));
  }
  impl->lanes = std::make_unique<mem::CopyLanes>(mem::CopyLanes::choose(std::min(lanes, 64u)));
  auto worker = UcxWorker::create(impl->network_only);
  if (!worker.ok()) return worker.status();
  impl->worker = std::move(worker).value();
  Impl* self = impl.get();
  ucp_worker_h w = self->worker->worker();

  ucp_am_handler_param_t am{};
  am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                  UCP_AM_HANDLER_PARAM_FIELD_ARG;
  am.id = kAmControl;
  am.cb = Impl::on_am;
  am.arg = self;
  ucs_status_t s = ucp_worker_set_am_recv_handler(w, &am);
  if (s != UCS_OK) return ucx_status(StatusCode::kFailed, "ucp_worker_set_am_recv_handler", s);
  am.id = kAmData;
  am.cb = Impl::on_am_data;
  s = ucp_worker_set_am_recv_handler(w, &am);
  if (s != UCS_OK) return ucx_status(StatusCode::kFailed, "ucp_worker_set_am_recv_handler", s);

  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS;
  s = ucp_worker_query(w, &attr);
  if (s != UCS_OK) return ucx_status(StatusCode::kFailed, "ucp_worker_query", s);
  self->worker_address.assign(reinterpret_cast<const char*>(attr.address), attr.address_length);
  ucp_worker_release_address(w, attr.address);

  if (options.listen) {
    Status listening = self->start_listener(options.listen_ip, options.listen_port);
    if (!listening.ok()) return listening;
  }
  self->worker->start([self] { self->tick(); }, kTick);
  return std::unique_ptr<Transport>(new Transport(std::move(impl)));
}

Status Transport::Impl::start_listener(const std::string& ip, uint16_t want_port) {
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(want_port);
  if (inet_pton(AF_INET, ip.c_str(), &addr.sin_addr) != 1) {
    return Status(StatusCode::kParamInvalid, "listen address '" + ip + "' is not an IPv4 address");
  }
  ucp_listener_params_t lp{};
  lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
  lp.sockaddr.addrlen = sizeof(addr);
  lp.conn_handler.cb = Impl::on_conn_request;
  lp.conn_handler.arg = this;
  ucs_status_t s = ucp_listener_create(worker->worker(), &lp, &listener);
  if (s != UCS_OK) {
    listener = nullptr;
    return ucx_status(StatusCode::kFailed,
                      "cannot listen on " + ip + ":" + std::to_string(want_port), s);
  }
  ucp_listener_attr_t la{};
  la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
  s = ucp_listener_query(listener, &la);
  if (s == UCS_OK) port = ntohs(reinterpret_cast<const sockaddr_in*>(&la.sockaddr)->sin_port);
  return Status();
}

Status Transport::listen(const std::string& ip, uint16_t port) {
  Impl* self = impl_.get();
  Status result;
  Status ran = self->worker->run_sync(
      [self, &result, ip, port] {
        if (self->listener != nullptr) {
          result = Status(StatusCode::kFailed, "already listening");
          return;
        }
        result = self->start_listener(ip, port);
      },
      kSyncTimeout);
  return ran.ok() ? result : ran;
}

void Transport::stop_listening() {
  Impl* self = impl_.get();
  (void)self->worker->run_sync(
      [self] {
        if (self->listener != nullptr) ucp_listener_destroy(self->listener);
        self->listener = nullptr;
        self->port = 0;
      },
      kSyncTimeout);
}

void Transport::shutdown() {
  Impl* self = impl_.get();
  {
    std::lock_guard<std::mutex> lock(self->shut_mu);
    if (self->shut) return;
    self->shut = true;
  }
  Status bye_done = self->worker->run_sync(
      [self] {
        std::vector<std::shared_ptr<Impl::Peer>> all;
        for (auto& [id, peer] : self->peers) all.push_back(peer);
        for (auto& peer : all) {
          self->unlink(peer, Status(StatusCode::kEngineFinalized, "finalized"));
        }
        for (auto& [ep, acc] : self->accepting) self->close_ep(ep, true);
        self->accepting.clear();
        if (self->listener != nullptr) ucp_listener_destroy(self->listener);
        self->listener = nullptr;
        for (auto& [w, pw] : self->withdrawals) {
          if (pw.done) pw.done();
        }
        self->withdrawals.clear();
        self->worker->progress_until(
            [self] {
              self->drain_lane_done();
              self->tick();
              return self->closing.empty() && self->lane_batches_in_flight() == 0;
            },
            Clock::now() + std::chrono::milliseconds(1000));
        for (auto& [id, m] : self->memory) ucp_mem_unmap(self->worker->context(), m.memh);
        self->memory.clear();
      },
      kSyncTimeout);
  (void)bye_done;
  self->worker->stop();
}

uint16_t Transport::listen_port() const { return impl_->port; }

unsigned Transport::copy_lanes() const { return impl_->lanes->lanes(); }

}  // namespace kvdist::net
