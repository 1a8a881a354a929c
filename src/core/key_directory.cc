#include "core/key_directory.h"

namespace kvdist::core {

std::string KeyId::describe() const {
  switch (space) {
    case Space::kRequest:
      return "req_id " + std::to_string(id) + " of model " + std::to_string(model_id);
    case Space::kPrefix:
      return "prefix_id " + std::to_string(id) + " of model " + std::to_string(model_id);
    case Space::kBlocks:
      return "the blocks key of model " + std::to_string(model_id);
  }
  return "a key";
}

std::optional<KeyId> key_id_of(const CacheKey& key) {
  switch (key.kind) {
    case CacheKey::Kind::kRequest:
      if (key.is_prefix()) return KeyId{KeyId::Space::kPrefix, key.prefix_id, key.model_id};
      return KeyId{KeyId::Space::kRequest, key.req_id, key.model_id};
    case CacheKey::Kind::kBlocks:
      return KeyId{KeyId::Space::kBlocks, 0, key.model_id};
    case CacheKey::Kind::kCacheId:
      return std::nullopt;
  }
  return std::nullopt;
}

Status KeyDirectory::bind(const KeyId& key, KeyBinding binding) {
  if (keys_.count(key) != 0) {
    return Status(StatusCode::kFailed, "cache key (" + key.describe() + ") is bound already");
  }
  keys_.emplace(key, std::move(binding));
  return Status();
}

const KeyBinding* KeyDirectory::find(const KeyId& key) const {
  auto it = keys_.find(key);
  return it == keys_.end() ? nullptr : &it->second;
}

std::optional<KeyId> KeyDirectory::key_at(int64_t cache_id, uint32_t batch) const {
  for (const auto& [key, b] : keys_) {
    if (key.space != KeyId::Space::kBlocks && b.cache_id == cache_id && b.batch_index == batch) {
      return key;
    }
  }
  return std::nullopt;
}

bool KeyDirectory::mark_pulled(const KeyId& key, const std::vector<uint32_t>& tensors) {
  auto it = keys_.find(key);
  if (it == keys_.end()) return false;
  if (tensors.empty()) {
    it->second.unpulled.clear();
  } else {
    for (uint32_t t : tensors) it->second.unpulled.erase(t);
  }
  if (!it->second.unpulled.empty()) return false;
  keys_.erase(it);
  return true;
}

std::optional<int64_t> KeyDirectory::remove(const KeyId& key) {
  auto it = keys_.find(key);
  if (it == keys_.end()) return std::nullopt;
  int64_t id = it->second.cache_id;
  keys_.erase(it);
  return id;
}

size_t KeyDirectory::remove_cache(int64_t cache_id) {
  size_t n = 0;
  for (auto it = keys_.begin(); it != keys_.end();) {
    if (it->second.cache_id == cache_id) {
      it = keys_.erase(it);
      ++n;
    } else {
      ++it;
    }
  }
  return n;
}

}  // namespace kvdist::core
