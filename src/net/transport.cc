#include "net/transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>

#include "mem/region_table.h"
#include "mem/stream_copy.h"
#include "net/ucx_worker.h"
#include "net/wire.h"

namespace kvdist::net {
namespace {

using Clock = std::chrono::steady_clock;
constexpr uint16_t kAmControl = 1;
constexpr std::chrono::milliseconds kTick{20};
constexpr std::chrono::milliseconds kSyncTimeout{10000};

std::string host_id() {
  char name[256] = {};
  gethostname(name, sizeof(name) - 1);
  std::string id = name;
  std::ifstream boot("/proc/sys/kernel/random/boot_id");
  std::string boot_id;
  std::getline(boot, boot_id);
  return id + "/" + boot_id;
}

Status ucx_status(StatusCode code, const std::string& what, ucs_status_t s) {
  return Status(code, what + ": " + ucs_status_string(s));
}

// A small one-shot result a user thread waits for, filled by the progress
// thread. Shared so that a waiter that gave up leaves it safely behind.
class Waiter {
 public:
  void set(Status s) {
    std::lock_guard<std::mutex> lock(mu_);
    if (done_) return;
    done_ = true;
    status_ = std::move(s);
    cv_.notify_all();
  }
  Status wait(std::chrono::milliseconds timeout, const char* what) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return done_; })) {
      return Status(StatusCode::kTimeout, std::string(what) + " timed out");
    }
    return status_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  Status status_;
};

}  // namespace

struct Transport::Impl {
  struct Memory {
    ucp_mem_h memh = nullptr;
    uint64_t base = 0;
    uint64_t len = 0;
    std::string rkey;
  };
  struct LocalRegion {
    uint64_t mem_id = 0;
    std::string rkey;
  };
  struct Withdrawal {
    std::set<uint64_t> waiting;  // peers that have not confirmed
    std::function<void()> done;
    // A peer that has not confirmed by then loses its link (a network cut
    // leaves it looking alive; closing the link is what guarantees that
    // none of its writes can still land).
    Clock::time_point deadline;
  };
  // A region of a peer: its remote key, and where it is mapped in this
  // process when it is shared memory on this host (ucp_rkey_ptr).
  struct RemoteRegion {
    ucp_rkey_h rkey = nullptr;
    char* mapped = nullptr;
  };
  enum class PeerState { kConnecting, kUp, kDown };
  struct Peer {
    uint64_t cluster_id = 0;
    PeerState state = PeerState::kConnecting;
    ucp_ep_h ctrl = nullptr;
    ucp_ep_h data = nullptr;
    mem::RegionTable<RemoteRegion> remote;
    std::shared_ptr<Waiter> connect_waiter;  // client side, until up
    Clock::time_point connect_deadline;
    uint64_t next_ping = 1;
    std::map<uint64_t, std::function<void()>> pongs;
    std::set<uint64_t> writes;  // ids of pending writes
    bool same_host = false;     // the peer said it runs on this host (boot id)
  };
  struct PendingWrite {
    std::shared_ptr<Peer> peer;
    std::string note;
    std::function<void(const Status&)> done;
    Clock::time_point deadline;
  };

  TransportOptions options;
  TransportEvents events;
  std::unique_ptr<UcxWorker> worker;
  ucp_listener_h listener = nullptr;
  uint16_t port = 0;
  std::string worker_address;
  std::string my_host;
  bool shut = false;
  std::mutex shut_mu;
  // Set while the UCX worker is destroyed: UCX then completes what is still
  // pending (sends queued on an endpoint whose close never finished, e.g.
  // after a network cut) and calls back into us; callbacks only release
  // their requests.
  bool destroying = false;
  // Copy into a peer's shared memory ourselves (KVDIST_DIRECT_COPY=0: let
  // UCX put everything).
  bool direct_copy = true;

  // The worker goes first, while everything its callbacks touch still lives.
  ~Impl() {
    destroying = true;
    worker.reset();
  }

  // Progress-thread state.
  uint64_t next_id = 1;
  std::map<uint64_t, Memory> memory;
  mem::RegionTable<LocalRegion> local;
  std::map<uint64_t, Withdrawal> withdrawals;
  std::map<uint64_t, std::shared_ptr<Peer>> peers;  // by cluster id (linked or linking)
  std::map<ucp_ep_h, std::shared_ptr<Peer>> by_ctrl;
  std::map<ucp_ep_h, Clock::time_point> accepting;  // server eps before hello
  std::map<uint64_t, PendingWrite> writes;
  std::map<uint64_t, std::function<void(ucs_status_t)>> ops;  // flush / send completions
  std::vector<void*> closing;

  // ---- small UCX helpers -------------------------------------------------

  uint64_t add_op(std::function<void(ucs_status_t)> fn) {
    uint64_t id = next_id++;
    ops.emplace(id, std::move(fn));
    return id;
  }

  // Completion of a request we attached an op to; user_data is this Impl.
  // Callbacks never fire inside the call that created the request, so
  // track() has always recorded it by then.
  std::map<void*, uint64_t> request_ops;

  static void on_send_done(void* request, ucs_status_t status, void* user_data) {
    auto* self = static_cast<Impl*>(user_data);
    auto it = self->request_ops.find(request);
    if (it == self->request_ops.end()) return;
    uint64_t op = it->second;
    self->request_ops.erase(it);
    ucp_request_free(request);
    if (!self->destroying) self->finish_op(op, status);
  }

  void finish_op(uint64_t op, ucs_status_t status) {
    auto it = ops.find(op);
    if (it == ops.end()) return;
    auto fn = std::move(it->second);
    ops.erase(it);
    fn(status);
  }

  // Attaches op to the outcome of a non-blocking call.
  void track(ucs_status_ptr_t req, uint64_t op) {
    if (req == nullptr) {
      finish_op(op, UCS_OK);
    } else if (UCS_PTR_IS_ERR(req)) {
      finish_op(op, UCS_PTR_STATUS(req));
    } else {
      request_ops.emplace(req, op);
    }
  }

  void flush(ucp_ep_h ep, std::function<void(ucs_status_t)> fn) {
    uint64_t op = add_op(std::move(fn));
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = on_send_done;
    p.user_data = this;
    track(ucp_ep_flush_nbx(ep, &p), op);
  }

  void send(ucp_ep_h ep, const Message& msg) {
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

  void close_ep(ucp_ep_h ep, bool force) {
    if (ep == nullptr) return;
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    ucs_status_ptr_t req = ucp_ep_close_nbx(ep, &p);
    if (req != nullptr && !UCS_PTR_IS_ERR(req)) closing.push_back(req);
  }

  static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status) {
    auto* self = static_cast<Impl*>(arg);
    if (self->destroying) return;
    // Not inside UCX's callback: closing endpoints there is not allowed.
    self->worker->post([self, ep, status] { self->endpoint_failed(ep, status); });
  }

  void endpoint_failed(ucp_ep_h ep, ucs_status_t status) {
    auto acc = accepting.find(ep);
    if (acc != accepting.end()) {
      accepting.erase(acc);
      close_ep(ep, true);
      return;
    }
    std::shared_ptr<Peer> failed;
    for (auto& [id, peer] : peers) {
      if (peer->ctrl == ep || peer->data == ep) failed = peer;
    }
    if (failed) {
      fail_peer(
          failed,
          ucx_status(StatusCode::kLinkFailed,
                     "link to cluster " + std::to_string(failed->cluster_id) + " failed", status));
    }
  }

  // ---- peers ---------------------------------------------------------------

  ucp_ep_h create_data_ep(const std::string& address, bool same_host, ucs_status_t* status) {
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

  void add_remote_regions(Peer& peer, const std::vector<RegionInfo>& regions) {
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

  std::vector<RegionInfo> local_regions() const {
    std::vector<RegionInfo> out;
    local.for_each([&](const auto& r) {
      if (withdrawals.count(r.id) == 0) out.push_back({r.id, r.base, r.len, r.payload.rkey});
    });
    return out;
  }

  Message hello(MsgType type, uint64_t expected) const {
    Message m;
    m.type = type;
    m.cluster_id = options.cluster_id;
    m.expected_cluster_id = expected;
    m.host_id = my_host;
    m.worker_address = worker_address;
    m.regions = local_regions();
    return m;
  }

  // Ends the link. orderly: we said bye, so the control endpoint is closed
  // in flush mode to let the bye reach the peer.
  void fail_peer(std::shared_ptr<Peer> peer, const Status& why, bool orderly = false) {
    if (peer->state == PeerState::kDown) return;
    bool was_up = peer->state == PeerState::kUp;
    peer->state = PeerState::kDown;
    by_ctrl.erase(peer->ctrl);
    auto it = peers.find(peer->cluster_id);
    if (it != peers.end() && it->second == peer) peers.erase(it);
    peer->remote.for_each([](const auto& r) { ucp_rkey_destroy(r.payload.rkey); });
    peer->remote.clear();
    // Force-closing cancels every outstanding put and flush of the peer:
    // after this no write of ours can still land there.
    close_ep(peer->data, true);
    close_ep(peer->ctrl, !orderly);
    peer->data = nullptr;
    peer->ctrl = nullptr;
    for (uint64_t w : std::set<uint64_t>(peer->writes)) complete_write(w, why);
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

  void complete_write(uint64_t id, const Status& s) {
    auto it = writes.find(id);
    if (it == writes.end()) return;
    PendingWrite w = std::move(it->second);
    writes.erase(it);
    w.peer->writes.erase(id);
    if (s.ok() && !w.note.empty() && w.peer->state == PeerState::kUp) {
      Message m;
      m.type = MsgType::kNote;
      m.text = std::move(w.note);
      send(w.peer->ctrl, m);
    }
    w.done(s);
  }

  std::map<uint64_t, Withdrawal>::iterator maybe_finish_withdrawal(
      std::map<uint64_t, Withdrawal>::iterator it) {
    if (!it->second.waiting.empty()) return std::next(it);
    auto done = std::move(it->second.done);
    local.remove(it->first);
    auto next = withdrawals.erase(it);
    if (done) done();
    return next;
  }

  // ---- incoming ------------------------------------------------------------

  static ucs_status_t on_am(void* arg, const void* /*header*/, size_t /*header_length*/, void* data,
                            size_t length, const ucp_am_recv_param_t* param) {
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

  static void on_conn_request(ucp_conn_request_h request, void* arg) {
    auto* self = static_cast<Impl*>(arg);
    if (self->destroying) return;
    self->worker->post([self, request] { self->accept(request); });
  }

  void accept(ucp_conn_request_h request) {
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                   UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.conn_request = request;
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = on_ep_error;
    p.err_handler.arg = this;
    ucp_ep_h ep = nullptr;
    if (ucp_ep_create(worker->worker(), &p, &ep) != UCS_OK) return;
    accepting.emplace(ep, Clock::now() + options.accept_timeout);
  }

  void refuse(ucp_ep_h ep, StatusCode code, const std::string& text) {
    Message nack;
    nack.type = MsgType::kHelloNack;
    nack.code = static_cast<int64_t>(code);
    nack.text = text;
    send(ep, nack);
    // Flush-mode close: the refusal reaches the client before the end.
    close_ep(ep, false);
  }

  void handle(ucp_ep_h ep, const std::string& bytes) {
    Message msg;
    bool valid = decode(bytes, &msg);
    auto acc = accepting.find(ep);
    if (acc != accepting.end()) {
      accepting.erase(acc);
      if (!valid || msg.type != MsgType::kHello) {
        refuse(ep, StatusCode::kLinkFailed, "malformed handshake or unsupported protocol version");
        return;
      }
      on_hello(ep, msg);
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
      case MsgType::kHello:
        fail_peer(peer, Status(StatusCode::kLinkFailed, "unexpected handshake"));
        break;
    }
  }

  void on_hello(ucp_ep_h ep, const Message& msg) {
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
  }

  // UCX 1.13 parses a worker address without bounds and aborts the process
  // (an assertion) on an address version it does not know. A peer's
  // address comes off the wire: refuse what cannot be one before UCX sees
  // it. The header's low 4 bits are the address version, 0 or 1 in 1.13;
  // a uuid of 8 bytes follows. (A crafted address past this check is UCX's
  // parser's to handle: docs/reliability.md.)
  static bool plausible_worker_address(const std::string& a) {
    return a.size() > 9 && (static_cast<uint8_t>(a[0]) & 0xf) <= 1;
  }

  void on_hello_ack(const std::shared_ptr<Peer>& peer, const Message& msg) {
    if (peer->state != PeerState::kConnecting) return;
    if (!plausible_worker_address(msg.worker_address)) {
      fail_peer(peer, Status(StatusCode::kLinkFailed, "the listener sent no UCX worker address"));
      return;
    }
    if (msg.cluster_id != peer->cluster_id) {
      fail_peer(peer, Status(StatusCode::kLinkFailed,
                             "the listener is cluster " + std::to_string(msg.cluster_id) +
                                 ", not " + std::to_string(peer->cluster_id)));
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
    peer->connect_waiter->set(Status());
    peer->connect_waiter.reset();
  }

  void on_region_del(const std::shared_ptr<Peer>& peer, uint64_t region_id) {
    RemoteRegion removed;
    bool known = peer->remote.remove(region_id, &removed);
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

  void unlink(const std::shared_ptr<Peer>& peer, const Status& why) {
    bool up = peer->state == PeerState::kUp;
    if (up) {
      Message bye;
      bye.type = MsgType::kBye;
      send(peer->ctrl, bye);
    }
    fail_peer(peer, why, up);
  }

  // ---- deadlines -------------------------------------------------------------

  void tick() {
    auto now = Clock::now();
    for (auto it = accepting.begin(); it != accepting.end();) {
      if (it->second <= now) {
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
};

// ---- Transport --------------------------------------------------------------

Transport::Transport(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Transport::~Transport() { shutdown(); }

Result<std::unique_ptr<Transport>> Transport::start(const TransportOptions& options,
                                                    TransportEvents events) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->events = std::move(events);
  impl->my_host = host_id();
  if (const char* direct = std::getenv("KVDIST_DIRECT_COPY")) {
    impl->direct_copy = std::string(direct) != "0";
  }
  auto worker = UcxWorker::create();
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

  ucp_worker_attr_t attr{};
  attr.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS;
  s = ucp_worker_query(w, &attr);
  if (s != UCS_OK) return ucx_status(StatusCode::kFailed, "ucp_worker_query", s);
  self->worker_address.assign(reinterpret_cast<const char*>(attr.address), attr.address_length);
  ucp_worker_release_address(w, attr.address);

  if (options.listen) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(options.listen_port);
    if (inet_pton(AF_INET, options.listen_ip.c_str(), &addr.sin_addr) != 1) {
      return Status(StatusCode::kParamInvalid,
                    "listen address '" + options.listen_ip + "' is not an IPv4 address");
    }
    ucp_listener_params_t lp{};
    lp.field_mask = UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
    lp.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr);
    lp.sockaddr.addrlen = sizeof(addr);
    lp.conn_handler.cb = Impl::on_conn_request;
    lp.conn_handler.arg = self;
    s = ucp_listener_create(w, &lp, &self->listener);
    if (s != UCS_OK) {
      return ucx_status(
          StatusCode::kFailed,
          "cannot listen on " + options.listen_ip + ":" + std::to_string(options.listen_port), s);
    }
    ucp_listener_attr_t la{};
    la.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
    s = ucp_listener_query(self->listener, &la);
    if (s == UCS_OK) {
      self->port = ntohs(reinterpret_cast<const sockaddr_in*>(&la.sockaddr)->sin_port);
    }
  }
  self->worker->start([self] { self->tick(); }, kTick);
  return std::unique_ptr<Transport>(new Transport(std::move(impl)));
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
        for (auto& [ep, deadline] : self->accepting) self->close_ep(ep, true);
        self->accepting.clear();
        if (self->listener != nullptr) ucp_listener_destroy(self->listener);
        self->listener = nullptr;
        for (auto& [w, pw] : self->withdrawals) {
          if (pw.done) pw.done();
        }
        self->withdrawals.clear();
        self->worker->progress_until(
            [self] {
              self->tick();
              return self->closing.empty();
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
          if (peer->state == Impl::PeerState::kUp) self->send(peer->ctrl, m);
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
      if (peer->state != Impl::PeerState::kUp) continue;
      w.waiting.insert(id);
      self->send(peer->ctrl, m);
    }
    auto it = self->withdrawals.emplace(region_id, std::move(w)).first;
    self->maybe_finish_withdrawal(it);
  };
  if (!self->worker->post(run) && done) done();
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
        self->send(ep, self->hello(MsgType::kHello, peer_id));
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

Status Transport::check_remote(uint64_t peer_id,
                               const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
                               std::chrono::milliseconds timeout) {
  Impl* self = impl_.get();
  auto waiter = std::make_shared<Waiter>();
  // Runs on the progress thread; `ranges` is copied for the pong path.
  auto check = [self, peer_id, ranges](bool final_try, const std::shared_ptr<Waiter>& w) -> bool {
    auto it = self->peers.find(peer_id);
    if (it == self->peers.end() || it->second->state != Impl::PeerState::kUp) {
      w->set(
          Status(StatusCode::kNotYetLink, "cluster " + std::to_string(peer_id) + " is not linked"));
      return true;
    }
    for (const auto& [addr, len] : ranges) {
      if (it->second->remote.find(addr, len) == nullptr) {
        if (!final_try) return false;
        char buf[96];
        std::snprintf(buf, sizeof(buf), "[0x%llx, +%llu)", static_cast<unsigned long long>(addr),
                      static_cast<unsigned long long>(len));
        w->set(Status(StatusCode::kParamInvalid, std::string("destination ") + buf +
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
  return waiter->wait(timeout, "region table refresh");
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
      if (region == nullptr) {
        char buf[96];
        std::snprintf(buf, sizeof(buf), "[0x%llx, +%llu)",
                      static_cast<unsigned long long>(op.remote_addr),
                      static_cast<unsigned long long>(op.len));
        done(Status(StatusCode::kParamInvalid, std::string("destination ") + buf +
                                                   " is not (or no longer) memory cluster " +
                                                   std::to_string(peer_id) + " registered"));
        return;
      }
      regions.push_back(region);
    }
    uint64_t id = self->next_id++;
    self->writes.emplace(id, Impl::PendingWrite{peer, std::move(note), std::move(done),
                                                Clock::now() + self->options.write_timeout});
    peer->writes.insert(id);
    ucp_request_param_t p{};
    bool posted = false;
    for (size_t i = 0; i < ops.size(); ++i) {
      const WriteOp& op = ops[i];
      const auto& region = *regions[i];
      if (region.payload.mapped != nullptr) {
        // Shared memory mapped here: copy straight in, complete on return.
        mem::stream_copy(region.payload.mapped + (op.remote_addr - region.base),
                         reinterpret_cast<const void*>(op.local_addr), op.len);
        continue;
      }
      ucs_status_ptr_t req = ucp_put_nbx(peer->data, reinterpret_cast<void*>(op.local_addr), op.len,
                                         op.remote_addr, region.payload.rkey, &p);
      if (UCS_PTR_IS_ERR(req)) {
        self->fail_peer(peer,
                        ucx_status(StatusCode::kLinkFailed, "put failed", UCS_PTR_STATUS(req)));
        return;
      }
      if (req != nullptr) ucp_request_free(req);
      posted = true;
    }
    if (!posted) {
      self->complete_write(id, Status());
      return;
    }
    self->flush(peer->data, [self, id, peer](ucs_status_t s) {
      if (s == UCS_OK) {
        self->complete_write(id, Status());
      } else {
        self->fail_peer(peer, ucx_status(StatusCode::kLinkFailed, "flush failed", s));
      }
    });
  };
  if (!self->worker->post(std::move(run))) {
    done(Status(StatusCode::kEngineFinalized, "transport stopped"));
  }
}

void Transport::notify(uint64_t peer_id, std::string note) {
  Impl* self = impl_.get();
  self->worker->post([self, peer_id, note = std::move(note)] {
    auto it = self->peers.find(peer_id);
    if (it == self->peers.end() || it->second->state != Impl::PeerState::kUp) return;
    Message m;
    m.type = MsgType::kNote;
    m.text = note;
    self->send(it->second->ctrl, m);
  });
}

}  // namespace kvdist::net
