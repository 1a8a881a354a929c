#include "core/cache_registry.h"

#include <algorithm>
#include <chrono>

#include "core/notes.h"

namespace kvdist::core {
namespace {

constexpr uint64_t kSegmentBytes = uint64_t{256} << 20;
constexpr uint64_t kSegmentAlign = uint64_t{2} << 20;
constexpr uint64_t kCacheAlign = 4096;
constexpr uint64_t kTensorAlign = 64;

uint64_t align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Table ids of by_addr_ entries: one per cache (allocated) or per tensor
// (registered caller memory).
uint64_t addr_key(int64_t cache_id, uint32_t tensor) {
  return (static_cast<uint64_t>(cache_id) << 20) | tensor;
}

}  // namespace

CacheRegistry::CacheRegistry(std::shared_ptr<net::Transport> transport, uint64_t pool_max_bytes)
    : transport_(std::move(transport)), pool_max_bytes_(pool_max_bytes) {}

uint64_t CacheRegistry::pool_used() const {
  std::lock_guard<std::mutex> lock(mu_);
  uint64_t used = 0;
  for (const Segment& s : segments_) used += s.alloc.used();
  return used;
}

Result<std::pair<size_t, uint64_t>> CacheRegistry::pool_allocate(uint64_t bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < segments_.size(); ++i) {
      if (auto off = segments_[i].alloc.allocate(bytes)) return std::make_pair(i, *off);
    }
  }
  // Map a new segment outside mu_: the transport's progress thread may need
  // mu_ (withdraw callbacks) while we wait for it.
  std::lock_guard<std::mutex> grow(grow_mu_);
  uint64_t want = std::max(kSegmentBytes, align_up(bytes, kSegmentAlign));
  {
    std::lock_guard<std::mutex> lock(mu_);
    // Another thread may have grown the pool meanwhile.
    for (size_t i = 0; i < segments_.size(); ++i) {
      if (auto off = segments_[i].alloc.allocate(bytes)) return std::make_pair(i, *off);
    }
    if (pool_mapped_ + bytes > pool_max_bytes_) {
      return Status(StatusCode::kDeviceOutOfMemory,
                    "cache pool limit of " + std::to_string(pool_max_bytes_) + " bytes reached (" +
                        std::to_string(pool_mapped_) + " mapped, " + std::to_string(bytes) +
                        " more asked)");
    }
    want = std::min(want, pool_max_bytes_ - pool_mapped_);
  }
  auto mapped = transport_->map_memory(want);
  if (!mapped.ok()) return mapped.status();
  std::lock_guard<std::mutex> lock(mu_);
  segments_.push_back(
      Segment{mapped->mem_id, mapped->base, mem::RangeAllocator(mapped->len, kCacheAlign)});
  pool_mapped_ += mapped->len;
  auto off = segments_.back().alloc.allocate(bytes);
  if (!off) return Status(StatusCode::kDeviceOutOfMemory, "new pool segment too small");
  return std::make_pair(segments_.size() - 1, *off);
}

KvCache CacheRegistry::add_entry(Entry entry) {
  std::lock_guard<std::mutex> lock(mu_);
  return add_entry_locked(std::move(entry));
}

KvCache CacheRegistry::add_entry_locked(Entry entry) {
  int64_t id = next_id_++;
  entry.cache.cache_id = id;
  const KvCache& c = entry.cache;
  const uint64_t bytes = c.desc.tensor_bytes();
  if (entry.pool_slot) {
    uint64_t end = c.tensor_addrs.back() + bytes;
    by_addr_.add(addr_key(id, 0), c.tensor_addrs.front(), end - c.tensor_addrs.front(), id);
  } else if (!entry.parent) {  // a view's addresses belong to its parent
    for (uint32_t t = 0; t < c.tensor_addrs.size(); ++t) {
      by_addr_.add(addr_key(id, t), c.tensor_addrs[t], bytes, id);
    }
  }
  const uint32_t per_layer = c.desc.tensors_per_layer;
  entry.arrived.assign((c.desc.num_tensors + per_layer - 1) / per_layer, false);
  KvCache out = c;
  caches_.emplace(id, std::move(entry));
  return out;
}

Result<KvCache> CacheRegistry::allocate(const CacheDesc& desc, bool is_blocks) {
  Status valid = desc.validate();
  if (!valid.ok()) return valid;
  const uint64_t stride = align_up(desc.tensor_bytes(), kTensorAlign);
  const uint64_t total = stride * desc.num_tensors;
  auto slot = pool_allocate(total);
  if (!slot.ok()) return slot.status();
  uint64_t base = 0;
  uint64_t mem_id = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    base = segments_[slot->first].base + slot->second;
    mem_id = segments_[slot->first].mem_id;
  }
  Entry e;
  e.cache.desc = desc;
  e.cache.is_blocks = is_blocks;
  for (uint32_t t = 0; t < desc.num_tensors; ++t) e.cache.tensor_addrs.push_back(base + t * stride);
  e.pool_slot = slot.value();
  auto region = transport_->expose(mem_id, base, total);
  if (!region.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    segments_[slot->first].alloc.free(slot->second);
    return region.status();
  }
  e.regions.push_back(region.value());
  return add_entry(std::move(e));
}

Result<KvCache> CacheRegistry::register_user(const CacheDesc& desc,
                                             const std::vector<uint64_t>& addrs, bool is_blocks) {
  Status valid = desc.validate();
  if (!valid.ok()) return valid;
  if (addrs.size() != desc.num_tensors) {
    return Status(StatusCode::kParamInvalid, "tensor_addrs has " + std::to_string(addrs.size()) +
                                                 " entries, num_tensors is " +
                                                 std::to_string(desc.num_tensors));
  }
  const uint64_t bytes = desc.tensor_bytes();
  Entry e;
  e.cache.desc = desc;
  e.cache.is_blocks = is_blocks;
  e.cache.tensor_addrs = addrs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::optional<int64_t> inside;  // the allocated cache holding every tensor
    std::optional<size_t> outside;  // the first tensor in no registered cache
    for (size_t i = 0; i < addrs.size(); ++i) {
      if (addrs[i] == 0) {
        return Status(StatusCode::kParamInvalid, "tensor_addrs[" + std::to_string(i) + "] is null");
      }
      const auto* region = by_addr_.find(addrs[i], bytes);
      if (region == nullptr) {
        if (!outside) outside = i;
        continue;
      }
      const Entry& holder = caches_.at(region->payload);
      if (!holder.pool_slot || (inside && *inside != region->payload)) {
        return Status(StatusCode::kParamInvalid,
                      "tensor_addrs[" + std::to_string(i) + "] overlaps a registered cache");
      }
      inside = region->payload;
    }
    if (inside) {
      // A view of memory carved from a kvdist allocation (e.g. vLLM's KV
      // cache allocated through the connector's pool): the allocation is
      // already registered and exposed to peers, so nothing is registered
      // again; the view keeps it alive.
      if (outside) {
        return Status(StatusCode::kParamInvalid, "tensor_addrs[" + std::to_string(*outside) +
                                                     "] lies outside the allocation that "
                                                     "holds the other tensors");
      }
      ++caches_.at(*inside).pins;
      e.parent = inside;
      return add_entry_locked(std::move(e));
    }
  }
  auto undo = [&] {
    for (uint64_t r : e.regions) transport_->withdraw(r, nullptr);
    for (uint64_t m : e.mem_ids) transport_->unmap_memory(m);
  };
  for (uint64_t a : addrs) {
    auto mapped = transport_->register_memory(a, bytes);
    if (!mapped.ok()) {
      undo();
      return mapped.status();
    }
    e.mem_ids.push_back(mapped->mem_id);
    auto region = transport_->expose(mapped->mem_id, a, bytes);
    if (!region.ok()) {
      undo();
      return region.status();
    }
    e.regions.push_back(region.value());
  }
  return add_entry(std::move(e));
}

Status CacheRegistry::deallocate(int64_t cache_id) {
  std::vector<uint64_t> regions;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = caches_.find(cache_id);
    if (it == caches_.end() || it->second.freeing) return Status();
    Entry& e = it->second;
    e.freeing = true;
    for (uint32_t t = 0; t < e.cache.tensor_addrs.size(); ++t)
      by_addr_.remove(addr_key(cache_id, t));
    e.failure = Status(StatusCode::kKvCacheNotExist, "cache was deallocated");
    if (e.cache.is_blocks) {  // its blocks key goes with it (as the original)
      e.key_refs -= static_cast<int>(keys_.remove_cache(cache_id));
    }
    regions = e.regions;
    e.withdrawals_left = regions.size();
    arrivals_cv_.notify_all();
    maybe_release_locked(it);
  }
  std::weak_ptr<CacheRegistry> weak = weak_from_this();
  for (uint64_t r : regions) {
    transport_->withdraw(r, [weak, cache_id] {
      if (auto self = weak.lock()) self->withdrawn(cache_id);
    });
  }
  return Status();
}

void CacheRegistry::withdrawn(int64_t cache_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = caches_.find(cache_id);
  if (it == caches_.end()) return;
  if (it->second.withdrawals_left > 0) --it->second.withdrawals_left;
  maybe_release_locked(it);
}

void CacheRegistry::maybe_release_locked(std::map<int64_t, Entry>::iterator it) {
  Entry& e = it->second;
  if (!e.freeing || e.pins > 0 || e.key_refs > 0 || e.withdrawals_left > 0) return;
  if (e.pool_slot) {
    segments_[e.pool_slot->first].alloc.free(e.pool_slot->second);
  }
  for (uint64_t m : e.mem_ids) transport_->unmap_memory(m);
  std::optional<int64_t> parent = e.parent;
  caches_.erase(it);
  if (parent) {
    auto p = caches_.find(*parent);
    if (p != caches_.end()) {
      --p->second.pins;
      maybe_release_locked(p);
    }
  }
}

Status CacheRegistry::bind_keys(int64_t cache_id, const std::vector<CacheKey>& keys) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = caches_.find(cache_id);
  if (it == caches_.end() || it->second.freeing) {
    return Status(StatusCode::kKvCacheNotExist,
                  "cache " + std::to_string(cache_id) + " does not exist in this manager");
  }
  Entry& e = it->second;
  const auto batch = static_cast<uint64_t>(e.cache.desc.shape[0]);
  if (!e.cache.is_blocks && keys.size() > batch) {
    return Status(StatusCode::kParamInvalid, std::to_string(keys.size()) +
                                                 " cache keys for a cache of batch size " +
                                                 std::to_string(batch));
  }
  // All or none: check every key before binding any.
  std::vector<std::pair<KeyId, uint32_t>> todo;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (keys[i].is_placeholder()) continue;
    auto id = key_id_of(keys[i]);
    if (!id) return Status(StatusCode::kParamInvalid, "a cache id key cannot be bound");
    for (const auto& [other, unused] : todo) {
      if (!(other < *id) && !(*id < other)) {
        return Status(StatusCode::kFailed, "cache key (" + id->describe() + ") given twice");
      }
    }
    if (keys_.find(*id) != nullptr) {
      return Status(StatusCode::kFailed, "cache key (" + id->describe() + ") is bound already");
    }
    todo.emplace_back(*id, e.cache.is_blocks ? 0 : static_cast<uint32_t>(i));
  }
  for (const auto& [id, batch_index] : todo) {
    KeyBinding b;
    b.cache_id = cache_id;
    b.batch_index = batch_index;
    if (id.space == KeyId::Space::kRequest) {
      for (uint32_t t = 0; t < e.cache.desc.num_tensors; ++t) b.unpulled.insert(t);
    }
    (void)keys_.bind(id, std::move(b));
    ++e.key_refs;
  }
  return Status();
}

void CacheRegistry::drop_key_ref_locked(int64_t cache_id) {
  auto it = caches_.find(cache_id);
  if (it == caches_.end()) return;
  --it->second.key_refs;
  maybe_release_locked(it);
}

void CacheRegistry::remove_key(const CacheKey& key) {
  auto id = key_id_of(key);
  if (!id) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (auto cache_id = keys_.remove(*id)) drop_key_ref_locked(*cache_id);
}

size_t CacheRegistry::bound_keys() const {
  std::lock_guard<std::mutex> lock(mu_);
  return keys_.size();
}

Status CacheRegistry::find_source_locked(const CacheKey& key, PullSource* src, Entry** entry) {
  int64_t cache_id = key.cache_id;
  bool via_key = true;  // named through a key that holds the cache
  if (auto id = key_id_of(key)) {
    const KeyBinding* b = keys_.find(*id);
    if (b == nullptr) {
      return Status(StatusCode::kKvCacheNotExist, "no cache is bound to " + id->describe());
    }
    cache_id = b->cache_id;
    src->batch_index = b->batch_index;
    // Blocks and prefix keys stay until removed (as the original).
    if (id->space == KeyId::Space::kRequest) src->key = id;
  } else {
    src->batch_index = key.batch_index;
    const std::optional<KeyId> at = keys_.key_at(cache_id, key.batch_index);
    via_key = at.has_value();
    // A read by id uses up the request key of that batch (as the
    // original), never a prefix key.
    if (at && at->space == KeyId::Space::kRequest) src->key = at;
  }
  auto it = caches_.find(cache_id);
  // A freed cache is still readable through the keys that hold it (by id
  // only at a batch that has one), not otherwise.
  if (it == caches_.end() || (it->second.freeing && !via_key)) {
    return Status(StatusCode::kKvCacheNotExist,
                  "cache " + std::to_string(cache_id) + " does not exist");
  }
  if (src->batch_index >= static_cast<uint64_t>(it->second.cache.desc.shape[0])) {
    return Status(
        StatusCode::kKvCacheNotExist,
        "cache " + std::to_string(cache_id) + " has no batch " + std::to_string(src->batch_index));
  }
  *entry = &it->second;
  return Status();
}

Result<CacheRegistry::PullSource> CacheRegistry::pin_source(const CacheKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  PullSource src;
  Entry* e = nullptr;
  Status found = find_source_locked(key, &src, &e);
  if (!found.ok()) return found;
  ++e->pins;
  src.cache = e->cache;
  return src;
}

Result<CacheInfo> CacheRegistry::describe(const CacheKey& key) {
  std::lock_guard<std::mutex> lock(mu_);
  PullSource src;
  Entry* e = nullptr;
  Status found = find_source_locked(key, &src, &e);
  if (!found.ok()) return found;
  if (e->freeing) {  // a freed cache takes no more writes
    return Status(StatusCode::kKvCacheNotExist,
                  "cache " + std::to_string(e->cache.cache_id) + " was deallocated");
  }
  CacheInfo info;
  info.cache_id = e->cache.cache_id;
  info.batch_index = src.batch_index;
  info.is_blocks = e->cache.is_blocks;
  info.num_tensors = e->cache.desc.num_tensors;
  info.tensor_bytes = e->cache.desc.tensor_bytes();
  info.rows = static_cast<uint64_t>(e->cache.desc.shape[0]);
  info.tensor_addrs = e->cache.tensor_addrs;
  return info;
}

void CacheRegistry::mark_pulled(const KeyId& key, const std::vector<uint32_t>& tensors) {
  std::lock_guard<std::mutex> lock(mu_);
  const KeyBinding* b = keys_.find(key);
  if (b == nullptr) return;
  const int64_t cache_id = b->cache_id;
  if (keys_.mark_pulled(key, tensors)) drop_key_ref_locked(cache_id);
}

Result<KvCache> CacheRegistry::pin(int64_t cache_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = caches_.find(cache_id);
  if (it == caches_.end() || it->second.freeing) {
    return Status(StatusCode::kKvCacheNotExist,
                  "cache " + std::to_string(cache_id) + " does not exist in this manager");
  }
  ++it->second.pins;
  return it->second.cache;
}

Result<KvCache> CacheRegistry::pin_view(const KvCache& view, const std::string& what) {
  auto pinned = pin(view.cache_id);
  if (!pinned.ok()) return pinned;
  if (pinned->tensor_addrs != view.tensor_addrs) {
    unpin(view.cache_id);
    return Status(StatusCode::kParamInvalid, what + " does not match cache " +
                                                 std::to_string(view.cache_id) +
                                                 " as this manager allocated it");
  }
  return pinned;
}

void CacheRegistry::unpin(int64_t cache_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = caches_.find(cache_id);
  if (it == caches_.end()) return;
  --it->second.pins;
  maybe_release_locked(it);
}

void CacheRegistry::on_note(uint64_t peer, const Note& note) {
  std::lock_guard<std::mutex> lock(mu_);
  for (uint64_t addr : note.addrs) {
    const auto* region = by_addr_.find(addr, 0);
    if (region == nullptr) continue;
    auto it = caches_.find(region->payload);
    if (it == caches_.end()) continue;
    Entry& e = it->second;
    e.senders.insert(peer);
    if (note.kind == Note::Kind::kAbort) {
      e.failure = Status(note.code, "the sender's transfer into this cache failed");
      continue;
    }
    const uint64_t bytes = e.cache.desc.tensor_bytes();
    for (size_t t = 0; t < e.cache.tensor_addrs.size(); ++t) {
      if (addr >= e.cache.tensor_addrs[t] && addr < e.cache.tensor_addrs[t] + bytes) {
        e.arrived[t / e.cache.desc.tensors_per_layer] = true;
        break;
      }
    }
  }
  arrivals_cv_.notify_all();
}

void CacheRegistry::on_peer_down(uint64_t peer, const Status& why, bool any_link_left) {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [id, e] : caches_) {
    bool complete = std::all_of(e.arrived.begin(), e.arrived.end(), [](bool b) { return b; });
    if (complete || e.failure) continue;
    if (e.senders.count(peer) != 0 || (e.senders.empty() && !any_link_left)) {
      e.failure = Status(StatusCode::kLinkFailed, why.message());
    }
  }
  arrivals_cv_.notify_all();
}

Status CacheRegistry::wait_layer(int64_t cache_id, uint32_t layer, int32_t timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  auto it = caches_.find(cache_id);
  if (it == caches_.end() || it->second.freeing) {
    return Status(StatusCode::kKvCacheNotExist,
                  "cache " + std::to_string(cache_id) + " does not exist in this manager");
  }
  if (layer >= it->second.arrived.size()) {
    return Status(StatusCode::kParamInvalid, "layer " + std::to_string(layer) + " is not below " +
                                                 std::to_string(it->second.arrived.size()));
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    it = caches_.find(cache_id);
    if (it == caches_.end()) return Status(StatusCode::kKvCacheNotExist, "cache was deallocated");
    if (it->second.arrived[layer]) return Status();
    if (it->second.failure) return *it->second.failure;
    if (arrivals_cv_.wait_until(lock, deadline) == std::cv_status::timeout) {
      it = caches_.find(cache_id);
      if (it != caches_.end() && it->second.arrived[layer]) return Status();
      return Status(StatusCode::kTimeout, "layer " + std::to_string(layer) + " of cache " +
                                              std::to_string(cache_id) + " did not arrive within " +
                                              std::to_string(timeout_ms) + " ms");
    }
  }
}

Status CacheRegistry::reset_arrivals(int64_t cache_id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = caches_.find(cache_id);
  if (it == caches_.end() || it->second.freeing) {
    return Status(StatusCode::kKvCacheNotExist,
                  "cache " + std::to_string(cache_id) + " does not exist in this manager");
  }
  std::fill(it->second.arrived.begin(), it->second.arrived.end(), false);
  it->second.failure.reset();
  it->second.senders.clear();
  return Status();
}

}  // namespace kvdist::core
