#include "net/transport.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>

#include "mem/copy_lanes.h"
#include "mem/region_table.h"
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

// "destination [0x..., +len)", as the errors about a peer's memory say it.
std::string destination_text(uint64_t addr, uint64_t len) {
  char buf[96];
  std::snprintf(buf, sizeof(buf), "destination [0x%llx, +%llu)",
                static_cast<unsigned long long>(addr), static_cast<unsigned long long>(len));
  return buf;
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
    // Cross-process copies: the nonce we asked the peer to keep, its pid
    // once it has proved it, and the nonce it asked us to keep.
    std::string probe_nonce;
    pid_t pid = 0;
    std::string probe_echo;
    // Copy batches into this peer not yet returned by the lanes. While any
    // runs, its mapped regions (rkeys) and data endpoint stay: region
    // withdrawals and the link's teardown wait (after_lanes, teardown).
    size_t lane_batches = 0;
    std::vector<std::function<void()>> after_lanes;
    bool teardown_pending = false;
    Status down_why;
  };
  struct PendingWrite {
    std::shared_ptr<Peer> peer;
    std::string note;
    std::function<void(const Status&)> done;
    Clock::time_point deadline;
    // Parts still running; the write completes when none is.
    bool flush_pending = false;
    bool batch_pending = false;
    std::shared_ptr<mem::CopyBatch> batch;
    Status status;  // first failure
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
  // Copy into a peer on this host ourselves (KVDIST_DIRECT_COPY=0: let
  // UCX put everything).
  bool direct_copy = true;
  std::unique_ptr<mem::CopyLanes> lanes;
  // Copy batches finished on a lane thread, for the progress thread.
  std::mutex lane_mu;
  std::vector<std::pair<uint64_t, int>> lane_done;

  // The lanes first (their last callbacks only queue), then the worker,
  // while everything its callbacks touch still lives.
  ~Impl() {
    destroying = true;
    lanes.reset();
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

  std::shared_ptr<Peer> peer_of(ucp_ep_h ep) {
    for (auto& [id, peer] : peers) {
      if (peer->ctrl == ep || peer->data == ep) return peer;
    }
    return nullptr;
  }

  void endpoint_failed(ucp_ep_h ep, ucs_status_t status, std::shared_ptr<Peer> owner,
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
    close_ep(peer->ctrl, !orderly);
    peer->ctrl = nullptr;
    peer->down_why = why;
    for (uint64_t id : peer->writes) {
      PendingWrite& w = writes.at(id);
      if (w.status.ok()) w.status = why;
      if (w.batch_pending) mem::CopyLanes::cancel(w.batch);
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

  // The end of a failed link's data side: no copy runs into it any more.
  void teardown_data(const std::shared_ptr<Peer>& peer) {
    peer->teardown_pending = false;
    peer->remote.for_each([](const auto& r) { ucp_rkey_destroy(r.payload.rkey); });
    peer->remote.clear();
    // Force-closing cancels every outstanding put and flush of the peer:
    // after this no write of ours can still land there.
    close_ep(peer->data, true);
    peer->data = nullptr;
    for (uint64_t w : std::set<uint64_t>(peer->writes)) complete_write(w, peer->down_why);
  }

  // A part of write `id` ended; completes it when it was the last.
  void maybe_complete(uint64_t id) {
    auto it = writes.find(id);
    if (it == writes.end()) return;
    const PendingWrite& w = it->second;
    if (w.flush_pending || w.batch_pending) return;
    if (w.peer->state == PeerState::kDown && w.peer->data != nullptr)
      return;                  // teardown completes it
    Status status = w.status;  // complete_write erases w
    complete_write(id, status);
  }

  // A copy batch of write `id` returned from the lanes (progress thread).
  void lane_finished(uint64_t id, int err) {
    auto it = writes.find(id);
    if (it == writes.end()) return;
    PendingWrite& w = it->second;
    std::shared_ptr<Peer> peer = w.peer;
    w.batch_pending = false;
    w.batch.reset();
    --peer->lane_batches;
    Status failed;
    if (err != 0 && err != ECANCELED) {
      failed =
          Status(StatusCode::kLinkFailed, "copy into cluster " + std::to_string(peer->cluster_id) +
                                              " failed: " + std::strerror(err));
      if (w.status.ok()) w.status = failed;
    }
    if (peer->lane_batches == 0) {
      auto after = std::move(peer->after_lanes);
      peer->after_lanes.clear();
      for (auto& fn : after) fn();
    }
    if (!failed.ok()) fail_peer(peer, failed);
    if (peer->lane_batches == 0 && peer->teardown_pending) teardown_data(peer);
    maybe_complete(id);
  }

  void drain_lane_done() {
    std::vector<std::pair<uint64_t, int>> done;
    {
      std::lock_guard<std::mutex> lock(lane_mu);
      done.swap(lane_done);
    }
    for (auto [id, err] : done) lane_finished(id, err);
  }

  size_t lane_batches_in_flight() const {
    size_t n = 0;
    for (const auto& [id, w] : writes) n += w.batch_pending ? 1 : 0;
    return n;
  }

  void complete_write(uint64_t id, Status s) {  // by value: s may live in the write
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
    start_probe(peer);
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

  // Asks a peer on this host to prove its pid: cross-process copies go to
  // that pid only after we read our nonce back from its memory (a pid from
  // the wire alone could name any process of this user).
  void start_probe(const std::shared_ptr<Peer>& peer) {
    if (!direct_copy || !peer->same_host) return;
    std::string nonce(16, '\0');
    if (getrandom(nonce.data(), nonce.size(), 0) != static_cast<ssize_t>(nonce.size())) return;
    peer->probe_nonce = nonce;
    Message m;
    m.type = MsgType::kProbe;
    m.text = nonce;
    send(peer->ctrl, m);
  }

  void on_probe_ack(const std::shared_ptr<Peer>& peer, const Message& msg) {
    if (peer->probe_nonce.empty() || msg.code <= 0 || msg.code > INT32_MAX) return;
    std::string seen(peer->probe_nonce.size(), '\0');
    int err =
        mem::read_other_process(static_cast<pid_t>(msg.code), msg.value, seen.data(), seen.size());
    if (err == 0 && seen == peer->probe_nonce) peer->pid = static_cast<pid_t>(msg.code);
    peer->probe_nonce.clear();
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
    start_probe(peer);
    peer->connect_waiter->set(Status());
    peer->connect_waiter.reset();
  }

  void on_region_del(const std::shared_ptr<Peer>& peer, uint64_t region_id) {
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

  void finish_region_del(const std::shared_ptr<Peer>& peer, uint64_t region_id, bool known,
                         RemoteRegion removed) {
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
  if (!tls_allows_shared_memory()) impl->direct_copy = false;
  unsigned lanes = options.copy_lanes;
  if (const char* env = std::getenv("KVDIST_COPY_LANES")) {
    lanes = static_cast<unsigned>(std::strtoul(env, nullptr, 10));
  }
  impl->lanes = std::make_unique<mem::CopyLanes>(mem::CopyLanes::choose(std::min(lanes, 64u)));
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
    ucp_request_param_t p{};
    bool posted = false;
    std::vector<mem::CopyPiece> copies;
    for (size_t i = 0; i < ops.size(); ++i) {
      const WriteOp& op = ops[i];
      const auto& region = *regions[i];
      const auto* src = reinterpret_cast<const void*>(op.local_addr);
      if (region.payload.mapped != nullptr) {
        // The peer's shared memory, mapped here.
        copies.push_back({region.payload.mapped + (op.remote_addr - region.base), src, op.len, 0});
        continue;
      }
      if (peer->pid != 0) {
        // The peer's own memory, on this host, its pid proved.
        copies.push_back({reinterpret_cast<void*>(op.remote_addr), src, op.len, peer->pid});
        continue;
      }
      ucs_status_ptr_t req = ucp_put_nbx(peer->data, const_cast<void*>(src), op.len, op.remote_addr,
                                         region.payload.rkey, &p);
      if (UCS_PTR_IS_ERR(req)) {
        self->fail_peer(peer,
                        ucx_status(StatusCode::kLinkFailed, "put failed", UCS_PTR_STATUS(req)));
        return;
      }
      if (req != nullptr) ucp_request_free(req);
      posted = true;
    }
    Impl::PendingWrite& w = self->writes.at(id);
    if (posted) {
      w.flush_pending = true;
      self->flush(peer->data, [self, id, peer](ucs_status_t s) {
        auto it = self->writes.find(id);
        if (s != UCS_OK) {
          self->fail_peer(peer, ucx_status(StatusCode::kLinkFailed, "flush failed", s));
          return;
        }
        if (it == self->writes.end()) return;
        it->second.flush_pending = false;
        self->maybe_complete(id);
      });
    }
    if (!copies.empty()) {
      w.batch_pending = true;
      ++peer->lane_batches;
      // Last: the batch may finish (and complete the write) inside run().
      auto batch = self->lanes->run(std::move(copies), [self, id](int err) {
        if (self->worker->on_progress_thread()) {
          self->lane_finished(id, err);
          return;
        }
        {
          std::lock_guard<std::mutex> lock(self->lane_mu);
          self->lane_done.emplace_back(id, err);
        }
        self->worker->post([self] { self->drain_lane_done(); });
      });
      auto it = self->writes.find(id);
      if (it != self->writes.end() && it->second.batch_pending) it->second.batch = std::move(batch);
      return;
    }
    self->maybe_complete(id);
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
