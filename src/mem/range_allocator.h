// First-fit allocation of aligned ranges inside [0, capacity), with
// coalescing of freed neighbours. Not thread-safe.
#ifndef KVDIST_MEM_RANGE_ALLOCATOR_H_
#define KVDIST_MEM_RANGE_ALLOCATOR_H_

#include <cstdint>
#include <map>
#include <optional>

namespace kvdist::mem {

class RangeAllocator {
 public:
  // REQUIRES: alignment is a power of two.
  RangeAllocator(uint64_t capacity, uint64_t alignment);

  // Offset of a free range of at least len bytes (rounded up to the
  // alignment), or empty if none fits. len 0 is treated as 1.
  std::optional<uint64_t> allocate(uint64_t len);
  // Frees a range allocate() returned; false for an unknown offset.
  bool free(uint64_t offset);

  uint64_t capacity() const { return capacity_; }
  uint64_t used() const { return used_; }

 private:
  uint64_t capacity_;
  uint64_t alignment_;
  uint64_t used_ = 0;
  std::map<uint64_t, uint64_t> free_;  // offset -> length
  std::map<uint64_t, uint64_t> used_ranges_;
};

}  // namespace kvdist::mem

#endif  // KVDIST_MEM_RANGE_ALLOCATOR_H_
