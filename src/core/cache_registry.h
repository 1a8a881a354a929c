// The caches of one DataDist: their memory (a pool of UCX-allocated
// segments, or caller-owned memory registered with UCX), the regions peers
// may write, deferred freeing, and the per-layer arrivals of the receiving
// side.
#ifndef KVDIST_CORE_CACHE_REGISTRY_H_
#define KVDIST_CORE_CACHE_REGISTRY_H_

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "core/key_directory.h"
#include "core/notes.h"
#include "core/pull_request.h"
#include "kvdist/status.h"
#include "kvdist/types.h"
#include "mem/range_allocator.h"
#include "mem/region_table.h"
#include "net/transport.h"

namespace kvdist::core {

class CacheRegistry : public std::enable_shared_from_this<CacheRegistry> {
 public:
  CacheRegistry(std::shared_ptr<net::Transport> transport, uint64_t pool_max_bytes);

  Result<KvCache> allocate(const CacheDesc& desc, bool is_blocks);
  Result<KvCache> register_user(const CacheDesc& desc, const std::vector<uint64_t>& addrs,
                                bool is_blocks);
  // Deferred free (see CacheManager::deallocate_cache). A cache with
  // request keys lives on until each was pulled or removed; its blocks key
  // goes at once.
  Status deallocate(int64_t cache_id);

  // Binds keys to a live cache (see CacheManager::allocate_cache).
  Status bind_keys(int64_t cache_id, const std::vector<CacheKey>& keys);
  // Unbinds a request key; unknown keys are no error (as the original).
  void remove_key(const CacheKey& key);
  size_t bound_keys() const;

  // The source a pull names, pinned (unpin when done): the cache, the batch
  // the key names (0 for blocks keys), and the request key to mark pulled
  // once the pull succeeded, if any.
  struct PullSource {
    KvCache cache;
    uint32_t batch_index = 0;
    std::optional<KeyId> key;
  };
  // kKvCacheNotExist if the key is not bound, or the cache id unknown or
  // freed, or its batch index out of range.
  Result<PullSource> pin_source(const CacheKey& key);
  // Where a cache a peer names lies, for the peer to push into it (a freed
  // cache is not described).
  Result<CacheInfo> describe(const CacheKey& key);
  // A pull of `tensors` (empty: all) through `key` succeeded.
  void mark_pulled(const KeyId& key, const std::vector<uint32_t>& tensors);

  // The registry's own copy of a live cache (kKvCacheNotExist if unknown or
  // being freed). Pinned caches are not released while pinned.
  Result<KvCache> pin(int64_t cache_id);
  void unpin(int64_t cache_id);
  // pin() of the cache a caller's view names, which must have the tensor
  // addresses the registry holds: kParamInvalid "<what> does not match
  // cache N as this manager allocated it" otherwise (nothing left pinned).
  Result<KvCache> pin_view(const KvCache& view, const std::string& what);

  // Receiving side.
  void on_note(uint64_t peer, const Note& note);
  void on_peer_down(uint64_t peer, const Status& why, bool any_link_left);
  Status wait_layer(int64_t cache_id, uint32_t layer, int32_t timeout_ms);
  Status reset_arrivals(int64_t cache_id);

  uint64_t pool_used() const;

 private:
  struct Segment {
    uint64_t mem_id;
    uint64_t base;
    mem::RangeAllocator alloc;
  };
  struct Entry {
    KvCache cache;
    std::vector<uint64_t> regions;                         // exposed to peers
    std::vector<uint64_t> mem_ids;                         // registered caller memory
    std::optional<std::pair<size_t, uint64_t>> pool_slot;  // segment, offset
    // A view of an allocated cache's memory (register_user inside it): no
    // memory or regions of its own; pins the parent while it lives.
    std::optional<int64_t> parent;
    int pins = 0;
    int key_refs = 0;  // keys bound to this cache
    bool freeing = false;
    size_t withdrawals_left = 0;
    // Arrivals.
    std::vector<bool> arrived;
    std::optional<Status> failure;
    std::set<uint64_t> senders;
  };

  // Records a cache under a new id; returns it with that id.
  KvCache add_entry(Entry entry);
  KvCache add_entry_locked(Entry entry);  // REQUIRES mu_
  void withdrawn(int64_t cache_id);
  // REQUIRES mu_. The cache and batch `key` names (pin_source, describe).
  Status find_source_locked(const CacheKey& key, PullSource* src, Entry** entry);
  // REQUIRES mu_. A key of cache_id went away.
  void drop_key_ref_locked(int64_t cache_id);
  // REQUIRES mu_. Releases memory of a freed, unpinned, withdrawn cache.
  void maybe_release_locked(std::map<int64_t, Entry>::iterator it);
  Result<std::pair<size_t, uint64_t>> pool_allocate(uint64_t bytes);

  std::shared_ptr<net::Transport> transport_;
  const uint64_t pool_max_bytes_;
  mutable std::mutex mu_;
  std::condition_variable arrivals_cv_;
  std::mutex grow_mu_;  // one pool growth at a time
  std::vector<Segment> segments_;
  uint64_t pool_mapped_ = 0;
  int64_t next_id_ = 1;
  std::map<int64_t, Entry> caches_;
  KeyDirectory keys_;
  mem::RegionTable<int64_t> by_addr_;  // tensor memory of live caches -> id
};

}  // namespace kvdist::core

#endif  // KVDIST_CORE_CACHE_REGISTRY_H_
