#include "kvdist/cache_manager.h"

#include "core/engine.h"
#include "core/local_copy.h"

namespace kvdist {

Result<KvCache> CacheManager::allocate(const CacheDesc& desc, bool is_blocks) {
  return engine_->registry().allocate(desc, is_blocks);
}

Result<KvCache> CacheManager::allocate_cache(const CacheDesc& desc) {
  return allocate(desc, false);
}

Result<KvCache> CacheManager::allocate_blocks_cache(const CacheDesc& desc) {
  return allocate(desc, true);
}

Result<KvCache> CacheManager::allocate_cache(const CacheDesc& desc,
                                             const std::vector<CacheKey>& keys) {
  auto cache = allocate(desc, false);
  if (!cache.ok() || keys.empty()) return cache;
  Status bound = engine_->registry().bind_keys(cache->cache_id, keys);
  if (!bound.ok()) {
    engine_->registry().deallocate(cache->cache_id);
    return bound;
  }
  return cache;
}

Result<KvCache> CacheManager::allocate_blocks_cache(const CacheDesc& desc,
                                                    const CacheKey& blocks_key) {
  if (blocks_key.kind != CacheKey::Kind::kBlocks) {
    return Status(StatusCode::kParamInvalid, "blocks_cache_key is not a blocks key");
  }
  auto cache = allocate(desc, true);
  if (!cache.ok()) return cache;
  Status bound = engine_->registry().bind_keys(cache->cache_id, {blocks_key});
  if (!bound.ok()) {
    engine_->registry().deallocate(cache->cache_id);
    return bound;
  }
  return cache;
}

Status CacheManager::bind_cache_keys(int64_t cache_id, const std::vector<CacheKey>& keys) {
  return engine_->registry().bind_keys(cache_id, keys);
}

Status CacheManager::remove_cache_key(const CacheKey& key) {
  engine_->registry().remove_key(key);
  return Status();
}

Status CacheManager::pull_cache(const CacheKey& key, const KvCache& dst, const PullSpec& spec) {
  return engine_->pull(key, dst, spec);
}

Status CacheManager::push_cache(const KvCache& src, const CacheKey& key, const PushSpec& spec) {
  return engine_->push(src, key, spec);
}

Status CacheManager::copy_cache(const KvCache& dst, const KvCache& src, const CopySpec& spec) {
  return core::copy_cache(engine_->registry(), dst, src, spec);
}

Status CacheManager::copy_blocks(const KvCache& cache, const BlockPairs& pairs) {
  return core::copy_blocks(engine_->registry(), cache, pairs);
}

Status CacheManager::swap_blocks(const KvCache& src, const KvCache& dst, const BlockPairs& pairs) {
  return core::swap_blocks(engine_->registry(), src, dst, pairs);
}

Result<std::string> CacheManager::read_tensor(const KvCache& cache, uint32_t index) {
  return core::read_tensor(engine_->registry(), cache, index);
}

Result<KvCache> CacheManager::register_cache(const CacheDesc& desc,
                                             const std::vector<uint64_t>& tensor_addrs,
                                             bool is_blocks) {
  return engine_->registry().register_user(desc, tensor_addrs, is_blocks);
}

Status CacheManager::deallocate_cache(int64_t cache_id) {
  return engine_->registry().deallocate(cache_id);
}

Result<CacheTask> CacheManager::transfer_cache_async(
    const KvCache& src, std::shared_ptr<LayerSynchronizer> synchronizer,
    std::vector<TransferConfig> configs, const BlockMapping& blocks,
    const TransferOptions& options) {
  return engine_->transfer(src, std::move(synchronizer), std::move(configs), blocks, options);
}

Status CacheManager::wait_layer(const KvCache& cache, uint32_t layer, int32_t timeout_ms) {
  return engine_->registry().wait_layer(cache.cache_id, layer, timeout_ms);
}

Status CacheManager::reset_arrivals(const KvCache& cache) {
  return engine_->registry().reset_arrivals(cache.cache_id);
}

uint64_t CacheManager::pool_bytes_in_use() const { return engine_->registry().pool_used(); }

}  // namespace kvdist
