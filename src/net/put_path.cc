// The put path: ranges the peer exposed that this process cannot copy into
// (another host, or shared memory off) are written with UCX puts; a flush
// of the data endpoint confirms them all at the peer.
#include "net/transport_impl.h"

namespace kvdist::net {

bool Transport::Impl::post_puts(uint64_t id, const std::shared_ptr<Peer>& peer,
                                const std::vector<std::pair<WriteOp, ucp_rkey_h>>& puts) {
  ucp_request_param_t p{};
  for (const auto& [op, rkey] : puts) {
    ucs_status_ptr_t req = ucp_put_nbx(peer->data, reinterpret_cast<void*>(op.local_addr), op.len,
                                       op.remote_addr, rkey, &p);
    if (UCS_PTR_IS_ERR(req)) {
      fail_peer(peer, ucx_status(StatusCode::kLinkFailed, "put failed", UCS_PTR_STATUS(req)));
      return false;
    }
    if (req != nullptr) ucp_request_free(req);
  }
  writes.at(id).flush_pending = true;
  flush(peer->data, [this, id, peer](ucs_status_t s) {
    if (s != UCS_OK) {
      fail_peer(peer, ucx_status(StatusCode::kLinkFailed, "flush failed", s));
      return;
    }
    auto it = writes.find(id);
    if (it == writes.end()) return;
    it->second.flush_pending = false;
    maybe_complete(id);
  });
  return true;
}

}  // namespace kvdist::net
