#include "kvdist/cache_manager.h"

#include "core/engine.h"

namespace kvdist {

Result<KvCache> CacheManager::allocate(const CacheDesc& desc, bool is_blocks) {
  if (desc.placement != Placement::kDevice) {
    return Status(StatusCode::kParamInvalid, "Only support allocate device cache");
  }
  return engine_->registry().allocate(desc, is_blocks);
}

Result<KvCache> CacheManager::allocate_cache(const CacheDesc& desc) {
  return allocate(desc, false);
}

Result<KvCache> CacheManager::allocate_blocks_cache(const CacheDesc& desc) {
  return allocate(desc, true);
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
