// Plain value types of the kvdist API: roles, data types, cache
// descriptions, caches and transfer configurations.
//
// All types here are values: copyable, no hidden ownership, safe to read from
// any thread while nobody writes them.
#ifndef KVDIST_TYPES_H_
#define KVDIST_TYPES_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "kvdist/status.h"

namespace kvdist {

// Values as in LLM-DataDist's LLMRole.
enum class Role : int32_t { kPrompt = 1, kDecoder = 2, kMix = 3 };

// Values as in GE's ge::DataType (reference §3).
enum class DataType : int32_t {
  kFloat = 0,
  kFloat16 = 1,
  kInt8 = 2,
  kInt32 = 3,
  kUint8 = 4,
  kInt16 = 6,
  kUint16 = 7,
  kUint32 = 8,
  kInt64 = 9,
  kUint64 = 10,
  kDouble = 11,
  kBool = 12,
  kString = 13,
  kBf16 = 27,
};

// Bytes per element; 0 for kString and unknown values.
size_t data_type_size(DataType type);

// HOST: caller-owned memory (KvCache::create_cpu_cache in the original).
// DEVICE: memory kvdist allocates; on CPU hosts ordinary process memory.
enum class Placement : int32_t { kHost = 0, kDevice = 1 };

// Shape of one cache: num_tensors tensors of identical shape. Layer-wise
// calls order tensors K0, V0, K1, V1, ...: layer l is tensors 2l and 2l+1.
struct CacheDesc {
  uint32_t num_tensors = 0;
  std::vector<int64_t> shape;
  DataType data_type = DataType::kFloat16;
  Placement placement = Placement::kDevice;
  int32_t batch_dim_index = 0;
  int32_t seq_len_dim_index = -1;
  // kvdist: tensors that make one layer, in order (layer l is tensors
  // [l * tensors_per_layer, (l + 1) * tensors_per_layer)). 2 for separate K
  // and V tensors (the original's layout); 1 where a layer's K and V share
  // one tensor (vLLM's CPU cache, [blocks, heads, block_size, 2 * head]).
  uint32_t tensors_per_layer = 2;

  // Checks num_tensors > 0, tensors_per_layer > 0, a non-empty shape of positive
  // dimensions, a sized data type, and the dimension indices (kParamInvalid otherwise).
  Status validate() const;
  // Bytes of one tensor (product of shape x element size).
  uint64_t tensor_bytes() const;
  // shape[batch_dim_index]; for a blocks cache the number of blocks.
  int64_t batch_size() const;
};

// A cache known to a CacheManager. A value: copying it does not copy memory.
// tensor_addrs[i] is the address of tensor i in the owning process.
struct KvCache {
  int64_t cache_id = -1;
  CacheDesc desc;
  std::vector<uint64_t> tensor_addrs;
  bool is_blocks = false;  // paged (blocks) cache: shape[0] is the block count.
};

// Half-open range of source layers [start, stop).
struct LayerRange {
  uint32_t start = 0;
  uint32_t stop = 0;
  uint32_t size() const { return stop - start; }
  bool contains(uint32_t layer) const { return layer >= start && layer < stop; }
};

// An id of a CacheKey that is not set (the original's 2**64-1).
inline constexpr uint64_t kInvalidKeyId = UINT64_MAX;

// How a DECODER names a cache of a PROMPT it pulls from: the original's
// CacheKey (kRequest), CacheKeyByIdAndIndex (kCacheId) and BlocksCacheKey
// (kBlocks). A PROMPT binds request and blocks keys to caches when it
// allocates them (CacheManager::allocate_cache); any live cache can be
// pulled by id.
struct CacheKey {
  enum class Kind : uint8_t { kRequest = 0, kCacheId = 1, kBlocks = 2 };
  Kind kind = Kind::kRequest;
  uint64_t prompt_cluster_id = 0;
  // kRequest: exactly one of req_id and prefix_id is set when pulling; a
  // key with neither set is a placeholder at allocation (that batch index
  // gets no key).
  uint64_t req_id = kInvalidKeyId;
  uint64_t prefix_id = kInvalidKeyId;
  uint64_t model_id = 0;     // kRequest, kBlocks
  int64_t cache_id = -1;     // kCacheId
  uint32_t batch_index = 0;  // kCacheId: the source batch

  bool is_prefix() const { return prefix_id != kInvalidKeyId; }
  // A request key that names no batch (allocation placeholder).
  bool is_placeholder() const {
    return kind == Kind::kRequest && req_id == kInvalidKeyId && prefix_id == kInvalidKeyId;
  }
};

// One destination of a transfer_cache_async call.
// dst_addrs holds 2 addresses per transferred layer: K then V of the k-th
// transferred layer at dst_addrs[2k] and dst_addrs[2k+1]. The addresses are
// the destination process's own, inside memory it registered.
struct TransferConfig {
  uint64_t dst_cluster_id = 0;
  std::vector<uint64_t> dst_addrs;
  std::optional<LayerRange> src_layer_range;  // empty: all layers of the source
  uint32_t src_batch_index = 0;
  // Addressed by key instead (the original's TransferWithCacheKeyConfig):
  // the cache of cluster dst_key->prompt_cluster_id that a kCacheId or
  // kBlocks key names; transfer_cache_async asks that cluster where it lies
  // and fills dst_cluster_id and dst_addrs. dst_layer_range: its layers
  // (empty: all), as many as the source's.
  std::optional<CacheKey> dst_key;
  std::optional<LayerRange> dst_layer_range;
};

// Paged (PA) transfers: source block src_block_indices[i] lands at
// dst + dst_block_indices[i] * dst_block_memory_size for each tensor.
// dst_block_memory_size 0 or empty means "the source block size"; larger is
// allowed (one source block is written at each destination block's start),
// smaller is kParamInvalid.
struct BlockMapping {
  std::vector<uint64_t> src_block_indices;
  std::vector<uint64_t> dst_block_indices;
  std::optional<uint64_t> dst_block_memory_size;

  bool empty() const { return src_block_indices.empty() && dst_block_indices.empty(); }
};

// What pull_cache / pull_blocks read from the PROMPT and where it lands.
// Every offset and size is in bytes of one tensor's per-batch slice
// (tensor bytes / shape[0]), the same for every tensor pulled.
struct PullSpec {
  // Destination batch (pull_cache; the source batch is the key's).
  uint32_t batch_index = 0;
  // Bytes per tensor; -1: the destination slice minus dst_offset.
  int64_t size = -1;
  // Offsets inside the source and destination slices. Given (even 0),
  // a pull does not release its request key (as in the original).
  std::optional<uint64_t> src_offset;
  std::optional<uint64_t> dst_offset;
  // Layers of the source and of the destination; empty: every tensor.
  // Their tensor counts must be equal.
  std::optional<LayerRange> src_layers;
  std::optional<LayerRange> dst_layers;
  uint32_t tensors_per_layer = 2;
  // pull_blocks: source block src_blocks[i] lands at destination block
  // dst_blocks[i]; both caches' blocks must be of one size.
  std::vector<uint64_t> src_blocks;
  std::vector<uint64_t> dst_blocks;
  // Deadline of the whole pull (empty: Options.sync_kv_timeout_ms).
  std::optional<int32_t> timeout_ms;
  // Leave request keys in place (CacheManager mode's reads by id).
  bool keep_keys = false;
};

// What push_cache / push_blocks write into a peer's cache named by key
// (a kCacheId or kBlocks key; the peer says where that cache lies).
struct PushSpec {
  uint32_t src_batch_index = 0;
  // Source and destination layers, of one length (empty: every layer).
  std::optional<LayerRange> src_layers;
  std::optional<LayerRange> dst_layers;
  uint32_t tensors_per_layer = 2;
  // push_blocks: source block src_blocks[i] into destination block
  // dst_blocks[i]; blocks of one size on both sides.
  std::vector<uint64_t> src_blocks;
  std::vector<uint64_t> dst_blocks;
  // Deadline of the whole push (empty: Options.sync_kv_timeout_ms).
  std::optional<int32_t> timeout_ms;
};

// A remote cluster to link to (a DECODER links to a PROMPT's listen address).
struct ClusterInfo {
  uint64_t remote_cluster_id = 0;
  std::string remote_ip;  // dotted IPv4, e.g. "127.0.0.1"
  uint16_t remote_port = 0;
};

}  // namespace kvdist

#endif  // KVDIST_TYPES_H_
