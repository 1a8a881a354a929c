// What a DECODER asks of the PROMPT it pulls from (pull_cache,
// pull_blocks), as it travels in a kPullRequest note. The DECODER has
// resolved and checked its own side (destination addresses, sizes, block
// indices); the PROMPT resolves the key, checks its side and writes.
#ifndef KVDIST_CORE_PULL_REQUEST_H_
#define KVDIST_CORE_PULL_REQUEST_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kvdist/status.h"
#include "kvdist/types.h"

namespace kvdist::core {

// Block pairs of one request; a pull_blocks with more is sent as several.
inline constexpr size_t kMaxPullBlockPairs = 2048;
// Tensors x block pairs of one request (a Llama-3-70B cache, 160 tensors,
// times 2048 pairs is 327,680): the serving side refuses more.
inline constexpr size_t kMaxPullRanges = size_t{1} << 20;

struct PullRequest {
  uint64_t pull_id = 0;
  CacheKey key;
  // Source tensors, in the order of dst_addrs (empty: every tensor of the
  // source, which must then be as many as dst_addrs).
  std::vector<uint32_t> src_tensors;
  // Contiguous pulls: bytes per tensor from src_offset in the source slice.
  uint64_t src_offset = 0;
  uint64_t size = 0;
  // Offsets were given: a request key is not marked pulled (the original).
  bool keep_key = false;
  // Per pulled tensor: where its bytes go in the DECODER (contiguous), or
  // the destination tensor's start (blocks).
  std::vector<uint64_t> dst_addrs;
  // Blocks pulls: pairs of (source, destination) block indices, and the
  // destination's block size, which must equal the source's.
  std::vector<uint64_t> src_blocks;
  std::vector<uint64_t> dst_blocks;
  uint64_t dst_block_bytes = 0;

  bool blocks() const { return !src_blocks.empty(); }
};

// The requests of one pull_cache / pull_blocks into `dst` (a cache of the
// pulling cluster, as its registry holds it), checked on this side first:
// tensor indices, the destination batch, offsets and size, destination
// blocks. A blocks pull whose pairs do not fit in one note is split.
// kParamInvalid naming the value otherwise.
Result<std::vector<PullRequest>> plan_pull_requests(const CacheKey& key, const KvCache& dst,
                                                    const PullSpec& spec);

// What a peer learns of a cache it names (a kResolveRequest carries the
// key; the reply carries this): enough to push into it by key.
struct CacheInfo {
  int64_t cache_id = -1;
  uint32_t batch_index = 0;  // the batch the key names
  bool is_blocks = false;
  uint32_t num_tensors = 0;
  uint64_t tensor_bytes = 0;
  uint64_t rows = 0;  // shape[0]: batches, or blocks
  std::vector<uint64_t> tensor_addrs;
};

std::string encode_cache_key(const CacheKey& key);
bool decode_cache_key(std::string_view in, CacheKey* key);
std::string encode_cache_info(const CacheInfo& info);
bool decode_cache_info(std::string_view in, CacheInfo* info);

std::string encode_pull_request(const PullRequest& req);
// False for anything but one well-formed request (bounded list sizes).
bool decode_pull_request(std::string_view in, PullRequest* req);

}  // namespace kvdist::core

#endif  // KVDIST_CORE_PULL_REQUEST_H_
