#include "core/local_copy.h"

#include <cstring>
#include <optional>
#include <string>
#include <utility>

namespace kvdist::core {
namespace {

Status invalid(std::string msg) { return Status(StatusCode::kParamInvalid, std::move(msg)); }

void* ptr(uint64_t addr) { return reinterpret_cast<void*>(static_cast<uintptr_t>(addr)); }

// Pins a cache of this manager for the length of a copy.
class Pinned {
 public:
  Pinned(CacheRegistry& registry, const KvCache& cache, const char* what)
      : registry_(registry), result_(registry.pin_view(cache, what)) {
    if (result_.ok()) return;
    // "src: cache 5 does not exist ..."; a mismatch names `what` already.
    const Status& s = result_.status();
    status_ = s.code() == StatusCode::kKvCacheNotExist
                  ? Status(s.code(), std::string(what) + ": " + s.message())
                  : s;
  }
  ~Pinned() {
    if (result_.ok()) registry_.unpin(result_->cache_id);
  }
  Pinned(const Pinned&) = delete;
  Pinned& operator=(const Pinned&) = delete;

  const Status& status() const { return status_; }
  const KvCache& cache() const { return result_.value(); }
  uint64_t rows() const { return static_cast<uint64_t>(cache().desc.shape[0]); }
  uint64_t stride() const { return cache().desc.tensor_bytes() / rows(); }

 private:
  CacheRegistry& registry_;
  Result<KvCache> result_;
  Status status_;
};

Status check_pairs(const BlockPairs& pairs, uint64_t src_rows, uint64_t dst_rows) {
  for (size_t i = 0; i < pairs.size(); ++i) {
    if (pairs[i].first >= src_rows) {
      return invalid("src block " + std::to_string(pairs[i].first) + " is not below " +
                     std::to_string(src_rows));
    }
    if (pairs[i].second >= dst_rows) {
      return invalid("dst block " + std::to_string(pairs[i].second) + " is not below " +
                     std::to_string(dst_rows));
    }
  }
  return Status();
}

}  // namespace

Status copy_cache(CacheRegistry& registry, const KvCache& dst, const KvCache& src,
                  const CopySpec& spec) {
  Pinned s(registry, src, "src");
  if (!s.status().ok()) return s.status();
  Pinned d(registry, dst, "dst");
  if (!d.status().ok()) return d.status();
  if (spec.src_batch_index >= s.rows()) {
    return invalid("src_batch_index " + std::to_string(spec.src_batch_index) + " is not below " +
                   std::to_string(s.rows()));
  }
  if (spec.dst_batch_index >= d.rows()) {
    return invalid("dst_batch_index " + std::to_string(spec.dst_batch_index) + " is not below " +
                   std::to_string(d.rows()));
  }
  if (s.cache().desc.num_tensors != d.cache().desc.num_tensors) {
    return invalid("src has " + std::to_string(s.cache().desc.num_tensors) + " tensors, dst " +
                   std::to_string(d.cache().desc.num_tensors));
  }
  if (spec.offset >= s.stride() || spec.offset >= d.stride()) {
    return invalid("offset " + std::to_string(spec.offset) + " is not inside a batch slice");
  }
  const uint64_t size = spec.size < 0 ? s.stride() - spec.offset : static_cast<uint64_t>(spec.size);
  if (size > s.stride() - spec.offset || size > d.stride() - spec.offset) {
    return invalid("offset " + std::to_string(spec.offset) + " + size " + std::to_string(size) +
                   " exceeds a batch slice (src " + std::to_string(s.stride()) + ", dst " +
                   std::to_string(d.stride()) + " bytes)");
  }
  for (size_t t = 0; t < s.cache().tensor_addrs.size(); ++t) {
    std::memmove(ptr(d.cache().tensor_addrs[t] + spec.dst_batch_index * d.stride() + spec.offset),
                 ptr(s.cache().tensor_addrs[t] + spec.src_batch_index * s.stride() + spec.offset),
                 size);
  }
  return Status();
}

Status copy_blocks(CacheRegistry& registry, const KvCache& cache, const BlockPairs& pairs) {
  Pinned c(registry, cache, "cache");
  if (!c.status().ok()) return c.status();
  Status valid = check_pairs(pairs, c.rows(), c.rows());
  if (!valid.ok()) return valid;
  for (uint64_t base : c.cache().tensor_addrs) {
    for (const auto& [from, to] : pairs) {
      std::memmove(ptr(base + to * c.stride()), ptr(base + from * c.stride()), c.stride());
    }
  }
  return Status();
}

Status swap_blocks(CacheRegistry& registry, const KvCache& src, const KvCache& dst,
                   const BlockPairs& pairs) {
  const bool swap_in = src.desc.placement == Placement::kHost;
  const KvCache& device = swap_in ? dst : src;
  const KvCache& host_in = swap_in ? src : dst;
  if (device.desc.placement != Placement::kDevice || host_in.desc.placement != Placement::kHost) {
    return invalid("swap_blocks copies between a HOST and a DEVICE cache");
  }
  Pinned d(registry, device, swap_in ? "dst" : "src");
  if (!d.status().ok()) return d.status();
  // A HOST cache of this manager (CacheManager mode's host pool) is pinned
  // too; caller memory (create_cpu_cache, id -1) is the caller's to keep.
  std::optional<Pinned> pinned_host;
  if (host_in.cache_id >= 0) {
    pinned_host.emplace(registry, host_in, swap_in ? "src" : "dst");
    if (!pinned_host->status().ok()) return pinned_host->status();
  }
  const KvCache& host = pinned_host ? pinned_host->cache() : host_in;
  Status valid = host.desc.validate();
  if (!valid.ok()) return valid;
  const uint64_t host_rows = static_cast<uint64_t>(host.desc.shape[0]);
  const uint64_t host_stride = host.desc.tensor_bytes() / host_rows;
  if (host_stride != d.stride()) {
    return invalid("block sizes differ: host " + std::to_string(host_stride) + ", device " +
                   std::to_string(d.stride()));
  }
  if (host.tensor_addrs.size() != d.cache().tensor_addrs.size()) {
    return invalid("the caches have " + std::to_string(host.tensor_addrs.size()) + " and " +
                   std::to_string(d.cache().tensor_addrs.size()) + " tensors");
  }
  valid =
      swap_in ? check_pairs(pairs, host_rows, d.rows()) : check_pairs(pairs, d.rows(), host_rows);
  if (!valid.ok()) return valid;
  const uint64_t block = d.stride();
  for (size_t t = 0; t < host.tensor_addrs.size(); ++t) {
    if (host.tensor_addrs[t] == 0) return invalid("host tensor " + std::to_string(t) + " is null");
  }
  for (size_t t = 0; t < host.tensor_addrs.size(); ++t) {
    const uint64_t from = swap_in ? host.tensor_addrs[t] : d.cache().tensor_addrs[t];
    const uint64_t to = swap_in ? d.cache().tensor_addrs[t] : host.tensor_addrs[t];
    for (const auto& [s, b] : pairs) std::memcpy(ptr(to + b * block), ptr(from + s * block), block);
  }
  return Status();
}

Result<std::string> read_tensor(CacheRegistry& registry, const KvCache& cache, uint32_t index) {
  Pinned c(registry, cache, "cache");
  if (!c.status().ok()) return c.status();
  if (index >= c.cache().tensor_addrs.size()) {
    return invalid("tensor_index " + std::to_string(index) + " is not below " +
                   std::to_string(c.cache().tensor_addrs.size()));
  }
  const uint64_t bytes = c.cache().desc.tensor_bytes();
  std::string out(bytes, '\0');
  std::memcpy(out.data(), ptr(c.cache().tensor_addrs[index]), bytes);
  return out;
}

}  // namespace kvdist::core
