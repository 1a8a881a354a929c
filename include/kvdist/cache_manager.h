// CacheManager: allocation and registration of KV caches, the layer-wise
// push (transfer_cache_async) and the receiving side's per-layer waits.
#ifndef KVDIST_CACHE_MANAGER_H_
#define KVDIST_CACHE_MANAGER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "kvdist/cache_task.h"
#include "kvdist/layer_synchronizer.h"
#include "kvdist/status.h"
#include "kvdist/types.h"

namespace kvdist {

namespace core {
class Engine;
}

// Per-call options of transfer_cache_async beyond the original's arguments.
struct TransferOptions {
  // Passed to synchronize_layer and enforced (empty: Options.sync_kv_timeout_ms).
  std::optional<int32_t> sync_timeout_ms;
  // Pass no timeout to synchronize_layer and enforce none (the original's
  // behaviour; the llm_datadist package uses it).
  bool unbounded_synchronizer = false;
  // The original's one-task rule: refused with kLinkBusy while another
  // exclusive task of this manager runs (the llm_datadist package sets it).
  // Without it, tasks run concurrently, each with its own worker thread.
  bool exclusive = false;
};

// Owned by a DataDist. All calls are thread-safe.
class CacheManager {
 public:
  explicit CacheManager(core::Engine* engine) : engine_(engine) {}

  // Allocates num_tensors tensors from memory registered with the transport
  // once (zero-copy puts). Placement must be kDevice. kDeviceOutOfMemory when
  // the pool limit is reached.
  Result<KvCache> allocate_cache(const CacheDesc& desc);
  // The same for a paged cache: shape[0] is the number of blocks.
  Result<KvCache> allocate_blocks_cache(const CacheDesc& desc);
  // Registers caller-owned memory (num_tensors addresses of tensor_bytes()
  // each) so it can be a source or destination. The caller keeps it alive
  // until deallocate_cache. On UCX 1.13 puts into such memory are emulated
  // and slower than into allocated caches (docs/transport.md). Tensors that
  // all lie inside one cache from allocate_cache make a view of it instead:
  // nothing is registered again, writes take the allocation's fast path, and
  // the allocation is not released before the view.
  Result<KvCache> register_cache(const CacheDesc& desc, const std::vector<uint64_t>& tensor_addrs,
                                 bool is_blocks = false);
  // Returns at once. The cache accepts no new writes from now on; its memory
  // goes back to the pool (or is unregistered) once no write into it, local
  // or remote, can still land. Unknown or already freed ids: kSuccess.
  Status deallocate_cache(int64_t cache_id);

  // Pushes src layer by layer to the configs' destinations (PROMPT only).
  // Values are validated before anything moves (kParamInvalid with a message
  // naming config, layer and address); destination ranges are checked against
  // the memory each linked destination registered. A config to a cluster that
  // is not linked ends with kNotYetLink in the task's results. Tasks run
  // concurrently unless options.exclusive (then kLinkBusy while another
  // exclusive task runs, as in the original).
  Result<CacheTask> transfer_cache_async(const KvCache& src,
                                         std::shared_ptr<LayerSynchronizer> synchronizer,
                                         std::vector<TransferConfig> configs,
                                         const BlockMapping& blocks = {},
                                         const TransferOptions& options = {});

  // Receiving side: waits until layer `layer` of `cache` (tensors 2l, 2l+1)
  // has been written by a transfer and confirmed by its sender, since the
  // cache was allocated or since reset_arrivals. kSuccess, kTimeout, or the
  // sender's error (kLinkFailed if the sender died, the config's code if its
  // transfer failed).
  Status wait_layer(const KvCache& cache, uint32_t layer, int32_t timeout_ms);
  // Forgets arrivals of `cache`, before reusing it for the next request.
  Status reset_arrivals(const KvCache& cache);

  // Diagnostics: bytes of the allocation pool held by caches, including
  // freed caches whose memory some peer may still write.
  uint64_t pool_bytes_in_use() const;

 private:
  Result<KvCache> allocate(const CacheDesc& desc, bool is_blocks);
  core::Engine* engine_;
};

}  // namespace kvdist

#endif  // KVDIST_CACHE_MANAGER_H_
