// A set of disjoint memory regions [base, base + len), each with an id and a
// payload, and the question every write must pass: does [addr, addr + len)
// lie inside one of them? Not thread-safe; the owner serialises access.
#ifndef KVDIST_MEM_REGION_TABLE_H_
#define KVDIST_MEM_REGION_TABLE_H_

#include <cstdint>
#include <iterator>
#include <map>
#include <utility>

namespace kvdist::mem {

template <typename Payload>
class RegionTable {
 public:
  struct Region {
    uint64_t id;
    uint64_t base;
    uint64_t len;
    Payload payload;
  };

  // False (table unchanged) if id is known, len is 0, the range wraps, or it
  // overlaps a region already present.
  bool add(uint64_t id, uint64_t base, uint64_t len, Payload payload) {
    if (len == 0 || base + len < base || by_id_.count(id) != 0) return false;
    auto next = by_base_.lower_bound(base);
    if (next != by_base_.end() && next->first < base + len) return false;
    if (next != by_base_.begin()) {
      const Region& prev = std::prev(next)->second;
      if (prev.base + prev.len > base) return false;
    }
    by_base_.emplace(base, Region{id, base, len, std::move(payload)});
    by_id_.emplace(id, base);
    return true;
  }

  // Removes region id; returns whether it was there.
  bool remove(uint64_t id, Payload* removed = nullptr) {
    auto it = by_id_.find(id);
    if (it == by_id_.end()) return false;
    auto region = by_base_.find(it->second);
    if (removed != nullptr) *removed = std::move(region->second.payload);
    by_base_.erase(region);
    by_id_.erase(it);
    return true;
  }

  // The region holding all of [addr, addr + len), or nullptr. len 0 asks for
  // the region holding addr.
  const Region* find(uint64_t addr, uint64_t len) const {
    if (addr + len < addr) return nullptr;
    auto it = by_base_.upper_bound(addr);
    if (it == by_base_.begin()) return nullptr;
    const Region& r = std::prev(it)->second;
    uint64_t end = addr + (len == 0 ? 1 : len);
    return end <= r.base + r.len ? &r : nullptr;
  }

  const Region* by_id(uint64_t id) const {
    auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &by_base_.at(it->second);
  }

  size_t size() const { return by_id_.size(); }

  template <typename Fn>
  void for_each(Fn&& fn) const {
    for (const auto& [base, region] : by_base_) fn(region);
  }

  void clear() {
    by_base_.clear();
    by_id_.clear();
  }

 private:
  std::map<uint64_t, Region> by_base_;
  std::map<uint64_t, uint64_t> by_id_;
};

}  // namespace kvdist::mem

#endif  // KVDIST_MEM_REGION_TABLE_H_
