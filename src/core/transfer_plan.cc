#include "core/transfer_plan.h"

#include <string>

namespace kvdist::core {
namespace {

Status invalid(std::string msg) { return Status(StatusCode::kParamInvalid, std::move(msg)); }

std::string cfg(size_t i) { return "transfer_configs[" + std::to_string(i) + "]"; }

}  // namespace

Status validate_transfer(const KvCache& src, std::vector<TransferConfig>& configs,
                         const BlockMapping& blocks) {
  const bool paged = !blocks.src_block_indices.empty();
  if (paged) {
    if (blocks.dst_block_indices.empty()) {
      return invalid("transfer from blocks to cache is not supported");
    }
    if (blocks.dst_block_indices.size() != blocks.src_block_indices.size()) {
      return invalid("num_block_indices mismatches: " +
                     std::to_string(blocks.src_block_indices.size()) + " src_block_indices, " +
                     std::to_string(blocks.dst_block_indices.size()) + " dst_block_indices");
    }
  } else if (!blocks.dst_block_indices.empty()) {
    return invalid("transfer from cache to blocks is not supported");
  }
  if (blocks.dst_block_indices.empty() && blocks.dst_block_memory_size.value_or(0) != 0) {
    return invalid("dst_block_memory_size must be None or 0 when dst is not a blocks cache");
  }
  const uint32_t num_tensors = src.desc.num_tensors;
  const uint32_t per_layer = src.desc.tensors_per_layer;
  if (per_layer == 0 || num_tensors % per_layer != 0) {
    return invalid("num_tensors " + std::to_string(num_tensors) +
                   " of src_cache is not a multiple of " + std::to_string(per_layer) +
                   " tensors per layer");
  }
  if (src.tensor_addrs.size() != num_tensors) {
    return invalid("src_cache has " + std::to_string(src.tensor_addrs.size()) +
                   " tensor addresses, " + std::to_string(num_tensors) + " expected");
  }
  const uint32_t num_layers = num_tensors / per_layer;
  for (size_t i = 0; i < configs.size(); ++i) {
    TransferConfig& c = configs[i];
    if (!c.src_layer_range) c.src_layer_range = LayerRange{0, num_layers};
    if (paged && c.src_batch_index != 0) {
      return invalid(cfg(i) + ".src_batch_index must be 0 for a blocks cache, got " +
                     std::to_string(c.src_batch_index));
    }
    const LayerRange r = *c.src_layer_range;
    if (!(r.start < r.stop && r.stop <= num_layers)) {
      return invalid(cfg(i) + ".src_layer_range [" + std::to_string(r.start) + ", " +
                     std::to_string(r.stop) + ") is not inside [0, " + std::to_string(num_layers) +
                     ")");
    }
    if (c.dst_addrs.size() != per_layer * static_cast<size_t>(r.size())) {
      return invalid(cfg(i) + ": expect " + std::to_string(per_layer * r.size()) +
                     " dst_addrs, got " + std::to_string(c.dst_addrs.size()));
    }
  }
  // kvdist's own checks, beyond the original's Python layer.
  const int64_t batch = src.desc.batch_size();
  if (batch <= 0) return invalid("src_cache has no batch dimension");
  if (!paged) {
    for (size_t i = 0; i < configs.size(); ++i) {
      if (configs[i].src_batch_index >= static_cast<uint64_t>(batch)) {
        return invalid(cfg(i) + ".src_batch_index " + std::to_string(configs[i].src_batch_index) +
                       " is not below batch size " + std::to_string(batch));
      }
    }
    return Status();
  }
  const uint64_t num_blocks = static_cast<uint64_t>(src.desc.shape[0]);
  const uint64_t block = src.desc.tensor_bytes() / num_blocks;
  const uint64_t dst_block =
      blocks.dst_block_memory_size.value_or(0) == 0 ? block : *blocks.dst_block_memory_size;
  if (dst_block < block) {
    return invalid("dst_block_memory_size " + std::to_string(dst_block) +
                   " is smaller than the source block size " + std::to_string(block));
  }
  for (size_t i = 0; i < blocks.src_block_indices.size(); ++i) {
    if (blocks.src_block_indices[i] >= num_blocks) {
      return invalid("src_block_indices[" + std::to_string(i) +
                     "] = " + std::to_string(blocks.src_block_indices[i]) + " is not below " +
                     std::to_string(num_blocks) + " blocks");
    }
    // dst + idx * dst_block must not wrap around.
    if (blocks.dst_block_indices[i] > (UINT64_MAX - dst_block) / dst_block) {
      return invalid("dst_block_indices[" + std::to_string(i) +
                     "] = " + std::to_string(blocks.dst_block_indices[i]) + " is out of range");
    }
  }
  return Status();
}

TransferPlan plan_transfer(const KvCache& src, const std::vector<TransferConfig>& configs,
                           const BlockMapping& blocks) {
  TransferPlan plan;
  const uint32_t per_layer = src.desc.tensors_per_layer;
  plan.num_layers = src.desc.num_tensors / per_layer;
  plan.tensors_per_layer = per_layer;
  const uint64_t tensor = src.desc.tensor_bytes();
  const bool paged = !blocks.src_block_indices.empty();
  const uint64_t block = tensor / static_cast<uint64_t>(src.desc.shape[0]);
  const uint64_t dst_block =
      blocks.dst_block_memory_size.value_or(0) == 0 ? block : *blocks.dst_block_memory_size;
  const bool mergeable = dst_block == block;
  const uint64_t slice = tensor / static_cast<uint64_t>(src.desc.batch_size());

  for (const TransferConfig& c : configs) {
    ConfigPlan cp;
    cp.dst_cluster = c.dst_cluster_id;
    cp.range = *c.src_layer_range;
    cp.dst_addrs = c.dst_addrs;
    for (uint32_t layer = cp.range.start; layer < cp.range.stop; ++layer) {
      const uint32_t k = layer - cp.range.start;
      std::vector<PlannedPut> puts;
      for (uint32_t kv = 0; kv < per_layer; ++kv) {
        const uint64_t src_base = src.tensor_addrs[per_layer * layer + kv];
        const uint64_t dst_base = c.dst_addrs[per_layer * k + kv];
        if (!paged) {
          puts.push_back({src_base + c.src_batch_index * slice, dst_base, slice});
          continue;
        }
        const auto& s = blocks.src_block_indices;
        const auto& d = blocks.dst_block_indices;
        for (size_t i = 0; i < s.size();) {
          size_t run = 1;
          while (mergeable && i + run < s.size() && s[i + run] == s[i] + run &&
                 d[i + run] == d[i] + run) {
            ++run;
          }
          puts.push_back({src_base + s[i] * block, dst_base + d[i] * dst_block, run * block});
          i += run;
        }
      }
      for (const PlannedPut& p : puts) plan.total_bytes += p.len;
      plan.total_puts += puts.size();
      cp.puts.push_back(std::move(puts));
    }
    plan.configs.push_back(std::move(cp));
  }
  return plan;
}

}  // namespace kvdist::core
