// Copies inside one process between caches (copy_cache, copy_blocks) and
// between a cache and caller-owned host memory (swap_blocks). Every range
// on the manager's side is checked against the cache the registry holds,
// which stays pinned while the bytes move.
#ifndef KVDIST_CORE_LOCAL_COPY_H_
#define KVDIST_CORE_LOCAL_COPY_H_

#include <string>

#include "core/cache_registry.h"
#include "kvdist/cache_manager.h"

namespace kvdist::core {

Status copy_cache(CacheRegistry& registry, const KvCache& dst, const KvCache& src,
                  const CopySpec& spec);
Status copy_blocks(CacheRegistry& registry, const KvCache& cache, const BlockPairs& pairs);
Status swap_blocks(CacheRegistry& registry, const KvCache& src, const KvCache& dst,
                   const BlockPairs& pairs);
Result<std::string> read_tensor(CacheRegistry& registry, const KvCache& cache, uint32_t index);

}  // namespace kvdist::core

#endif  // KVDIST_CORE_LOCAL_COPY_H_
