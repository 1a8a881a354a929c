// Validation and planning of one transfer_cache_async call: which bytes go
// where, as a list of puts per (config, layer). Pure functions, no I/O.
#ifndef KVDIST_CORE_TRANSFER_PLAN_H_
#define KVDIST_CORE_TRANSFER_PLAN_H_

#include <cstdint>
#include <vector>

#include "kvdist/status.h"
#include "kvdist/types.h"

namespace kvdist::core {

struct PlannedPut {
  uint64_t src = 0;
  uint64_t dst = 0;
  uint64_t len = 0;
  // The destination's region when the call was checked (0: not known).
  uint64_t region = 0;
};

struct ConfigPlan {
  uint64_t dst_cluster = 0;
  LayerRange range;
  // puts[k]: the puts of layer range.start + k (K tensor first, then V).
  std::vector<std::vector<PlannedPut>> puts;
  // The destination addresses of each layer's tensors (dst_addrs as given).
  std::vector<uint64_t> dst_addrs;
};

struct TransferPlan {
  uint32_t num_layers = 0;
  uint32_t tensors_per_layer = 2;  // of the source and every destination
  std::vector<ConfigPlan> configs;
  uint64_t total_bytes = 0;
  uint64_t total_puts = 0;
};

// Checks the values of a call in the original's order (reference §10.1,
// steps 5, 8, 9, 10) and then kvdist's extra checks (batch index in range,
// block indices inside the source cache, destination block size not below
// the source's). Fills every empty src_layer_range with all layers.
// kParamInvalid with a message naming the config and value.
Status validate_transfer(const KvCache& src, std::vector<TransferConfig>& configs,
                         const BlockMapping& blocks);

// REQUIRES: validate_transfer(src, configs, blocks) succeeded.
// Contiguous: one batch slice per tensor. Paged: consecutive (src, dst)
// block pairs merge into one put when both block sizes are equal.
TransferPlan plan_transfer(const KvCache& src, const std::vector<TransferConfig>& configs,
                           const BlockMapping& blocks);

}  // namespace kvdist::core

#endif  // KVDIST_CORE_TRANSFER_PLAN_H_
