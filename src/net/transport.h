// The UCX transport of one DataDist: links to peer clusters, memory that
// peers may write, one-sided writes with completion, and small notes.
//
// Each link has two UCX endpoints to the peer's worker: a control endpoint
// (client-server over the listen address, with peer error handling, so a
// dead peer is reported) and a data endpoint (from the worker address the
// peer sends in the handshake). On one host the data endpoint asks for no
// error handling, which lets UCX 1.13 keep its shared-memory transports
// (docs/transport.md); the control endpoint watches the peer for it.
//
// Writes into a peer on this host are copies, spread over copy lanes
// (mem/copy_lanes.h): into its shared memory mapped here, or into its own
// (caller-owned) memory with process_vm_writev once the peer has proved
// its pid (a nonce it keeps in memory, read back with process_vm_readv).
// Everything else is a UCX put.
//
// Nothing here knows layers, blocks or caches: a write is a list of
// (local address, remote address, length) and a note is opaque bytes.
// All methods are thread-safe; callbacks run on the progress thread and
// must not block.
#ifndef KVDIST_NET_TRANSPORT_H_
#define KVDIST_NET_TRANSPORT_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "kvdist/status.h"

namespace kvdist::net {

struct WriteOp {
  uint64_t local_addr = 0;
  uint64_t remote_addr = 0;
  uint64_t len = 0;
  // The peer's region the range must still lie in (0: any region). A range
  // whose memory was withdrawn and registered again at the same address is
  // then refused, not written into its new owner.
  uint64_t region_id = 0;
};

struct TransportOptions {
  uint64_t cluster_id = 0;
  bool listen = false;
  std::string listen_ip;
  uint16_t listen_port = 0;
  // A write whose completion is not confirmed by then fails the link; so
  // does a peer that has not confirmed a withdrawn region by then.
  std::chrono::milliseconds write_timeout{10000};
  // A client that has not completed the handshake by then is dropped.
  std::chrono::milliseconds accept_timeout{10000};
  // Threads that copy into peers on this host, the progress thread
  // included; 0: one per online CPU (at most 8). KVDIST_COPY_LANES
  // overrides it.
  unsigned copy_lanes = 0;
  // A shared secret both sides of every link must prove (HMAC-SHA256
  // challenge-response in the handshake, net/auth.h). Empty: the
  // environment's KVDIST_AUTH_SECRET, else no authentication.
  std::string auth_secret;
  // Treat every peer as on another host: no copies into its memory, no
  // shared-memory transport in UCX (unless UCX_TLS says otherwise). For
  // two "hosts" that are network namespaces of one machine, and to measure
  // the network path on one host. KVDIST_NETWORK_PATH=1 sets it too.
  bool network_only = false;
};

struct TransportEvents {
  // A note from peer `peer` (sent with write() or notify()).
  std::function<void(uint64_t peer, std::string note)> on_note;
  // The link to `peer` ended (peer died, unlinked, or a deadline passed);
  // links_left: how many other links are up.
  std::function<void(uint64_t peer, const Status& why, size_t links_left)> on_peer_down;
};

struct MappedMemory {
  uint64_t mem_id = 0;
  uint64_t base = 0;
  uint64_t len = 0;
};

class Transport {
 public:
  static Result<std::unique_ptr<Transport>> start(const TransportOptions& options,
                                                  TransportEvents events);
  ~Transport();  // shutdown()

  // Fails everything pending with kEngineFinalized, closes links, unmaps
  // memory, stops the progress thread. Idempotent.
  void shutdown();
  uint16_t listen_port() const;
  // Starts (or stops) accepting links on ip:port after start (switch_role).
  // kFailed if it cannot listen there or listens already.
  Status listen(const std::string& ip, uint16_t port);
  void stop_listening();
  // Copy lanes in use (the option, or the environment's override).
  unsigned copy_lanes() const;

  // Memory allocated and registered by UCX (the fast put target on 1.13).
  Result<MappedMemory> map_memory(uint64_t len);
  // Caller-owned memory registered with UCX.
  Result<MappedMemory> register_memory(uint64_t addr, uint64_t len);
  // Unregisters (and frees, if mapped here). The caller guarantees no region
  // inside it is exposed any more.
  void unmap_memory(uint64_t mem_id);

  // Lets every peer, present and future, write [base, base + len) of mem_id.
  Result<uint64_t> expose(uint64_t mem_id, uint64_t base, uint64_t len);
  // Withdraws a region; done() runs (on the progress thread) once no peer
  // can still write into it: each peer has confirmed or is gone.
  void withdraw(uint64_t region_id, std::function<void()> done);

  // Links to the peer listening at ip:port, expecting it to be cluster
  // `peer`. kLinkFailed (refused, unreachable, timed out, wrong cluster),
  // kAlreadyLink, or kSuccess.
  Status connect(uint64_t peer, const std::string& ip, uint16_t port,
                 std::chrono::milliseconds timeout);
  // Orderly unlink; kNotYetLink if not linked.
  Status disconnect(uint64_t peer, std::chrono::milliseconds timeout);
  bool connected(uint64_t peer);
  std::vector<uint64_t> peers();

  // kSuccess if every (addr, len) lies in one region `peer` exposed. On a
  // miss, first waits (up to timeout) until the peer has answered a ping, so
  // regions it exposed before the ping are known. kParamInvalid naming the
  // first range outside, kNotYetLink if the peer is not linked. On success
  // region_ids (if given) holds the region of each range.
  Status check_remote(uint64_t peer, const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
                      std::chrono::milliseconds timeout,
                      std::vector<uint64_t>* region_ids = nullptr);

  // Writes ops to `peer`. Every op is checked against the peer's regions
  // before any is posted (kParamInvalid, nothing written). Once all are
  // complete at the peer, `note` (if not empty) is sent and done(kSuccess)
  // runs; on failure done(code) runs and no write of this call can still land.
  void write(uint64_t peer, std::vector<WriteOp> ops, std::string note,
             std::function<void(const Status&)> done);
  // Sends a note alone, after the notes of every write to `peer` posted
  // before it (held until those writes complete).
  void notify(uint64_t peer, std::string note);

  struct Impl;

 private:
  explicit Transport(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace kvdist::net

#endif  // KVDIST_NET_TRANSPORT_H_
