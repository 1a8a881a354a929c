#include "mem/range_allocator.h"

#include <iterator>

namespace kvdist::mem {

RangeAllocator::RangeAllocator(uint64_t capacity, uint64_t alignment)
    : capacity_(capacity & ~(alignment - 1)), alignment_(alignment) {
  if (capacity_ > 0) free_.emplace(0, capacity_);
}

std::optional<uint64_t> RangeAllocator::allocate(uint64_t len) {
  if (len == 0) len = 1;
  if (len > capacity_) return std::nullopt;
  len = (len + alignment_ - 1) & ~(alignment_ - 1);
  for (auto it = free_.begin(); it != free_.end(); ++it) {
    if (it->second < len) continue;
    uint64_t offset = it->first;
    uint64_t rest = it->second - len;
    free_.erase(it);
    if (rest > 0) free_.emplace(offset + len, rest);
    used_ranges_.emplace(offset, len);
    used_ += len;
    return offset;
  }
  return std::nullopt;
}

bool RangeAllocator::free(uint64_t offset) {
  auto used = used_ranges_.find(offset);
  if (used == used_ranges_.end()) return false;
  uint64_t len = used->second;
  used_ranges_.erase(used);
  used_ -= len;
  auto next = free_.lower_bound(offset);
  if (next != free_.end() && offset + len == next->first) {
    len += next->second;
    next = free_.erase(next);
  }
  if (next != free_.begin()) {
    auto prev = std::prev(next);
    if (prev->first + prev->second == offset) {
      prev->second += len;
      return true;
    }
  }
  free_.emplace(offset, len);
  return true;
}

}  // namespace kvdist::mem
