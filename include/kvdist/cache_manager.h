// CacheManager: allocation and registration of KV caches, the layer-wise
// push (transfer_cache_async) and the receiving side's per-layer waits.
#ifndef KVDIST_CACHE_MANAGER_H_
#define KVDIST_CACHE_MANAGER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
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

// Block index pairs (source block, destination block).
using BlockPairs = std::vector<std::pair<uint64_t, uint64_t>>;

// What copy_cache copies: `size` bytes (-1: the source slice from
// `offset` on) at byte `offset` of batch src_batch_index of every source
// tensor, to the same offset of batch dst_batch_index of the destination.
struct CopySpec {
  uint32_t dst_batch_index = 0;
  uint32_t src_batch_index = 0;
  uint64_t offset = 0;
  int64_t size = -1;
};

// Owned by a DataDist. All calls are thread-safe.
class CacheManager {
 public:
  explicit CacheManager(core::Engine* engine) : engine_(engine) {}

  // Allocates num_tensors tensors from memory registered with the transport
  // once (zero-copy puts). On a CPU host kDevice and kHost caches are both
  // process memory from one pool (the placement is recorded: swap_blocks
  // reads it). kDeviceOutOfMemory when the pool limit is reached.
  Result<KvCache> allocate_cache(const CacheDesc& desc);
  // The same for a paged cache: shape[0] is the number of blocks.
  Result<KvCache> allocate_blocks_cache(const CacheDesc& desc);
  // A PROMPT's cache that DECODERs pull by key: keys[i] names batch i (a
  // placeholder key, neither req_id nor prefix_id set, skips it). More keys
  // than batches is kParamInvalid; a key bound already is kFailed (the
  // original's code). The cache outlives deallocate_cache until each
  // request key was pulled (a pull with offsets does not count) or removed;
  // prefix keys stay until removed.
  Result<KvCache> allocate_cache(const CacheDesc& desc, const std::vector<CacheKey>& keys);
  // A blocks cache under a blocks key (one per model_id); the key goes
  // with deallocate_cache.
  Result<KvCache> allocate_blocks_cache(const CacheDesc& desc, const CacheKey& blocks_key);
  // Binds keys to a cache of this manager as allocate_cache does (for
  // caches from register_cache).
  Status bind_cache_keys(int64_t cache_id, const std::vector<CacheKey>& keys);
  // Unbinds a request or prefix key; an unknown key is no error (as the
  // original).
  Status remove_cache_key(const CacheKey& key);

  // Reads from cluster key.prompt_cluster_id into `dst` (a cache of this
  // manager): pull_cache when spec.src_blocks is empty, pull_blocks
  // otherwise. Blocks until every byte is in, or the deadline. The serving
  // cluster writes into dst's registered memory; it reads only inside the
  // cache the key names. kNotYetLink, kKvCacheNotExist (dst unknown here,
  // or the key unknown there), kParamInvalid (sizes, offsets, indices,
  // tensor counts; nothing written), kLinkBusy (the peer is pushing to
  // this cluster in an exclusive task), kLinkFailed, kWaitProcessTimeout.
  // After a timeout the bytes may still land in dst; dst is not released
  // before they cannot.
  Status pull_cache(const CacheKey& key, const KvCache& dst, const PullSpec& spec = {});

  // Writes `src` (a cache of this manager) into the cache of cluster
  // key.prompt_cluster_id that `key` names (kCacheId: that cache's batch;
  // kBlocks: its blocks key), asking the peer where it lies first. Blocks
  // until every byte is in, or the deadline (kTimeout). Layers: spec's
  // ranges (empty: all); contiguous batches, or blocks, must be of one size
  // on both sides. The destination ranges are checked against the memory
  // the peer registered, as every write. kNotYetLink, kKvCacheNotExist,
  // kParamInvalid (nothing written).
  Status push_cache(const KvCache& src, const CacheKey& key, const PushSpec& spec = {});

  // Local copies (memory of this process; checked against the caches).
  Status copy_cache(const KvCache& dst, const KvCache& src, const CopySpec& spec = {});
  // Block pairs within one cache; all pairs are checked before any copy.
  Status copy_blocks(const KvCache& cache, const BlockPairs& pairs);
  // Between a HOST cache (caller memory, e.g. KvCache from
  // create_cpu_cache) and a DEVICE cache of this manager, either way;
  // block sizes and tensor counts must match.
  Status swap_blocks(const KvCache& src, const KvCache& dst, const BlockPairs& pairs);
  // A copy of tensor `index` of a cache.
  Result<std::string> read_tensor(const KvCache& cache, uint32_t index);

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
