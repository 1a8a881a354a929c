// The cache keys a PROMPT bound to its caches (allocate_cache with keys,
// allocate_blocks_cache with a blocks key): what a DECODER's pull_cache or
// pull_blocks names. A plain map; CacheRegistry owns it under its lock and
// keeps each keyed cache alive while a key refers to it.
#ifndef KVDIST_CORE_KEY_DIRECTORY_H_
#define KVDIST_CORE_KEY_DIRECTORY_H_

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "kvdist/status.h"
#include "kvdist/types.h"

namespace kvdist::core {

// The identity of a bound key: request and prefix keys of one model are
// separate name spaces (as the original's two maps); a blocks key is one
// per model.
struct KeyId {
  enum class Space : uint8_t { kRequest, kPrefix, kBlocks };
  Space space = Space::kRequest;
  uint64_t id = 0;  // req_id or prefix_id; 0 for kBlocks
  uint64_t model_id = 0;

  bool operator<(const KeyId& o) const {
    return std::tie(space, id, model_id) < std::tie(o.space, o.id, o.model_id);
  }
  std::string describe() const;
};

// The KeyId a request or blocks key names (kCacheId keys have none).
std::optional<KeyId> key_id_of(const CacheKey& key);

struct KeyBinding {
  int64_t cache_id = -1;
  uint32_t batch_index = 0;
  // Tensors no pull has read yet; the key goes once none is left (a
  // request key pulled in parts, layer range by layer range).
  std::set<uint32_t> unpulled;
};

class KeyDirectory {
 public:
  // kFailed if the key is bound already (the original's code for it).
  Status bind(const KeyId& key, KeyBinding binding);
  const KeyBinding* find(const KeyId& key) const;
  // The request or prefix key bound to (cache_id, batch), if any.
  std::optional<KeyId> key_at(int64_t cache_id, uint32_t batch) const;
  // Marks tensors as pulled (all of them if `tensors` is empty); true if
  // the key is gone now.
  bool mark_pulled(const KeyId& key, const std::vector<uint32_t>& tensors);
  // Unbinds; the cache it named, if it was bound.
  std::optional<int64_t> remove(const KeyId& key);
  // Unbinds every key of a cache; how many there were.
  size_t remove_cache(int64_t cache_id);
  size_t size() const { return keys_.size(); }

 private:
  std::map<KeyId, KeyBinding> keys_;
};

}  // namespace kvdist::core

#endif  // KVDIST_CORE_KEY_DIRECTORY_H_
