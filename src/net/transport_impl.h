// The inside of net::Transport, shared by the files that implement it, one
// concept each: control.cc (UCX requests, control messages), link.cc
// (links and their end), handshake.cc (hello, answer, pid proof),
// regions.cc (memory and region tables), write.cc (checking and completing
// writes), shm_path.cc (copies into peers on this host), put_path.cc (UCX
// puts) and transport.cc (start, shutdown, deadlines). Not installed; only
// src/net includes it.
#ifndef KVDIST_NET_TRANSPORT_IMPL_H_
#define KVDIST_NET_TRANSPORT_IMPL_H_

#include <ucp/api/ucp.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "mem/copy_lanes.h"
#include "mem/region_table.h"
#include "net/transport.h"
#include "net/ucx_worker.h"
#include "net/wire.h"

namespace kvdist::net {

using Clock = std::chrono::steady_clock;
inline constexpr uint16_t kAmControl = 1;
inline constexpr uint16_t kAmData = 2;  // net/am_path.cc
inline constexpr std::chrono::milliseconds kSyncTimeout{10000};

// "destination [0x..., +len)", as the errors about a peer's memory say it.
std::string destination_text(uint64_t addr, uint64_t len);

inline Status ucx_status(StatusCode code, const std::string& what, ucs_status_t s) {
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
  // A client of the listener, before its handshake has completed.
  struct Accepting {
    Clock::time_point deadline;
    std::string from;          // its address, for the log
    Message hello;             // its hello, once seen
    std::string server_nonce;  // our challenge; set once the hello was accepted
  };
  // A write of a peer being received on the active-message path.
  struct Incoming {
    uint32_t count = 0;  // its messages
    uint32_t received = 0;
    StatusCode code = StatusCode::kSuccess;  // first failure
    std::string note;                        // delivered once all are in, if all were placed
  };
  struct AmSend;
  struct AmRecv;
  enum class PeerState { kConnecting, kUp, kDown };
  struct Peer {
    uint64_t cluster_id = 0;
    PeerState state = PeerState::kConnecting;
    ucp_ep_h ctrl = nullptr;
    ucp_ep_h data = nullptr;
    mem::RegionTable<RemoteRegion> remote;
    std::shared_ptr<Waiter> connect_waiter;  // client side, until up
    // Client side of the handshake: our nonce, the listener's, and whether
    // our proof (and with it our regions) went out.
    std::string client_nonce;
    std::string server_nonce;
    bool auth_sent = false;
    Clock::time_point connect_deadline;
    uint64_t next_ping = 1;
    std::map<uint64_t, std::function<void()>> pongs;
    std::set<uint64_t> writes;  // ids of pending writes
    // Notes sent with notify() while writes posted before them were still
    // pending: (the last such write's id, payload). They go out after those
    // writes' own notes, so a peer never hears of a failure before the
    // layers that went ahead of it.
    std::deque<std::pair<uint64_t, std::string>> held_notes;
    bool same_host = false;  // the peer said it runs on this host (boot id)
    // Writes to it take the active-message path (no native RMA to it).
    bool am_writes = false;
    std::map<uint64_t, Incoming> incoming;  // its writes being received
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
    int am_sends = 0;             // active messages not yet completed
    bool ack_pending = false;     // the receiver's kDataAck
    bool note_with_data = false;  // the note went with the data
    Status status;                // first failure
  };

  TransportOptions options;
  TransportEvents events;
  std::unique_ptr<UcxWorker> worker;
  ucp_listener_h listener = nullptr;
  std::atomic<uint16_t> port{0};
  std::string worker_address;
  std::string my_host;
  // The shared secret links must prove (empty: none).
  std::string secret;
  struct {
    int logged = 0;
    long suppressed = 0;
    Clock::time_point last;
  } refusal_log;
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
  // Every peer is treated as remote (TransportOptions::network_only).
  bool network_only = false;
  // UCX may use shared memory between processes of this host.
  bool shm_transports = true;
  // Writes to peers without native RMA take the active-message path
  // (KVDIST_NETWORK_WRITES=am|put; default am, put where RDMA is present).
  bool am_writes = true;
  // Receives in flight on the active-message path, by local region: a
  // withdrawal waits for them.
  std::map<uint64_t, int> recvs_in_flight;
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
  std::map<ucp_ep_h, Accepting> accepting;  // server eps before their handshake ends
  std::map<uint64_t, PendingWrite> writes;
  std::map<uint64_t, std::function<void(ucs_status_t)>> ops;  // flush / send completions
  std::vector<void*> closing;

  // Completion of a request we attached an op to; user_data is this Impl.
  // Callbacks never fire inside the call that created the request, so
  // track() has always recorded it by then.
  std::map<void*, uint64_t> request_ops;

  // ---- control.cc: UCX requests, sends, flushes, what arrives ----
  uint64_t add_op(std::function<void(ucs_status_t)> fn);
  static void on_send_done(void* request, ucs_status_t status, void* user_data);
  void finish_op(uint64_t op, ucs_status_t status);
  // Attaches op to the outcome of a non-blocking call.
  void track(ucs_status_ptr_t req, uint64_t op);
  void flush(ucp_ep_h ep, std::function<void(ucs_status_t)> fn);
  void send(ucp_ep_h ep, const Message& msg);
  // A kNote with `text`, for the layer above at the peer.
  void send_note(ucp_ep_h ep, std::string text);
  void close_ep(ucp_ep_h ep, bool force);
  static ucs_status_t on_am(void* arg, const void* /*header*/, size_t /*header_length*/, void* data,
                            size_t length, const ucp_am_recv_param_t* param);
  void handle(ucp_ep_h ep, const std::string& bytes);

  // ---- link.cc: endpoints, accepting, failing and ending a link ----
  static void on_ep_error(void* arg, ucp_ep_h ep, ucs_status_t status);
  std::shared_ptr<Peer> peer_of(ucp_ep_h ep);
  void endpoint_failed(ucp_ep_h ep, ucs_status_t status, std::shared_ptr<Peer> owner,
                       bool looked_up);
  ucp_ep_h create_data_ep(const std::string& address, bool same_host, ucs_status_t* status);
  // Ends the link. orderly: we said bye, so the control endpoint is closed
  // in flush mode to let the bye reach the peer.
  void fail_peer(std::shared_ptr<Peer> peer, const Status& why, bool orderly = false);
  // The end of a failed link's data side: no copy runs into it any more.
  void teardown_data(const std::shared_ptr<Peer>& peer);
  void unlink(const std::shared_ptr<Peer>& peer, const Status& why);
  static void on_conn_request(ucp_conn_request_h request, void* arg);
  void accept(ucp_conn_request_h request);
  void refuse(ucp_ep_h ep, StatusCode code, const std::string& text);

  // ---- handshake.cc: hello, challenge, proofs, the same-host pid proof ----
  // The first message of a link (client side); draws the client's nonce.
  Message client_hello(Peer& peer);
  // A message from a client whose handshake has not completed.
  void on_handshake(ucp_ep_h ep, bool valid, const Message& msg);
  void on_hello(ucp_ep_h ep, Accepting& acc, const Message& msg);
  // The client's proof: only once it matches are its worker address and
  // remote keys handed to UCX.
  void on_auth(ucp_ep_h ep, const Message& msg);
  // Refuses a client mid-handshake, says why in the log (rate-limited).
  void refuse_handshake(ucp_ep_h ep, const std::string& why);
  void log_refusal(const std::string& line);
  void on_challenge(const std::shared_ptr<Peer>& peer, const Message& msg);
  // UCX 1.13 parses a worker address without bounds and aborts the process
  // (an assertion) on an address version it does not know. A peer's
  // address comes off the wire: refuse what cannot be one before UCX sees
  // it. The header's low 4 bits are the address version, 0 or 1 in 1.13;
  // a uuid of 8 bytes follows. (A crafted address past this check is UCX's
  // parser's to handle: docs/reliability.md.)
  static bool plausible_worker_address(const std::string& a);
  void on_hello_ack(const std::shared_ptr<Peer>& peer, const Message& msg);
  // Asks a peer on this host to prove its pid: cross-process copies go to
  // that pid only after we read our nonce back from its memory (a pid from
  // the wire alone could name any process of this user).
  void start_probe(const std::shared_ptr<Peer>& peer);
  void on_probe_ack(const std::shared_ptr<Peer>& peer, const Message& msg);

  // ---- regions.cc: regions this side exposes, regions of peers ----
  void add_remote_regions(Peer& peer, const std::vector<RegionInfo>& regions);
  std::vector<RegionInfo> local_regions() const;
  // Whether the peer has (or is about to have) our region table: regions
  // exposed or withdrawn from now on are announced to it.
  static bool knows_regions(const Peer& peer);
  std::map<uint64_t, Withdrawal>::iterator maybe_finish_withdrawal(
      std::map<uint64_t, Withdrawal>::iterator it);
  void on_region_del(const std::shared_ptr<Peer>& peer, uint64_t region_id);
  void finish_region_del(const std::shared_ptr<Peer>& peer, uint64_t region_id, bool known,
                         RemoteRegion removed);

  // ---- write.cc: checking, bookkeeping, completion ----
  // A part of write `id` ended; completes it when it was the last.
  void maybe_complete(uint64_t id);
  void complete_write(uint64_t id, Status s);  // by value: s may live in the write
  // Sends the held notes whose earlier writes have all completed.
  void release_notes(Peer& peer);

  // ---- shm_path.cc: copies into peers on this host, on the lanes ----
  // A copy batch of write `id` returned from the lanes (progress thread).
  void lane_finished(uint64_t id, int err);
  void drain_lane_done();
  size_t lane_batches_in_flight() const;
  // Runs the copies of write `id` on the lanes; the write may complete
  // before this returns.
  void post_copies(uint64_t id, const std::shared_ptr<Peer>& peer,
                   std::vector<mem::CopyPiece> copies);

  // ---- put_path.cc: UCX puts, completed by a flush ----
  // Posts the puts of write `id` and a flush that completes them. False if
  // the link failed on the way (the write completes through its teardown).
  bool post_puts(uint64_t id, const std::shared_ptr<Peer>& peer,
                 const std::vector<std::pair<WriteOp, ucp_rkey_h>>& puts);

  // ---- am_path.cc: active-message writes, placed by the receiver ----
  // Sends the write's note with its data when `with_note` (the receiver
  // delivers it as soon as the bytes are in: no round trip back first).
  bool post_am_writes(uint64_t id, const std::shared_ptr<Peer>& peer,
                      const std::vector<WriteOp>& ops, bool with_note);
  void am_sent(uint64_t id, ucs_status_t s);
  void on_data_ack(const std::shared_ptr<Peer>& peer, const Message& msg);
  static ucs_status_t on_am_data(void* arg, const void* header, size_t header_length, void* data,
                                 size_t length, const ucp_am_recv_param_t* param);
  static void on_data_received(void* request, ucs_status_t status, size_t length, void* user_data);
  // One message of a peer's write placed (or refused); acknowledges the
  // write once all are in.
  void data_message_done(const std::shared_ptr<Peer>& peer, uint64_t write_id, StatusCode code);

  // ---- transport.cc: deadlines ----
  void tick();
  // Creates the listener on ip:port (port 0: any); sets `port`. On the
  // progress thread, or before it started.
  Status start_listener(const std::string& ip, uint16_t port);
};

}  // namespace kvdist::net

#endif  // KVDIST_NET_TRANSPORT_IMPL_H_
