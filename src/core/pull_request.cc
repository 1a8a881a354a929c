#include "core/pull_request.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include "common/bytes.h"

namespace kvdist::core {
namespace {

constexpr uint32_t kMaxTensors = 4096;

void put_list(ByteWriter& w, const std::vector<uint64_t>& v) {
  w.u32(static_cast<uint32_t>(v.size()));
  for (uint64_t x : v) w.u64(x);
}

bool get_list(ByteReader& r, std::vector<uint64_t>* v, uint32_t max) {
  uint32_t n = 0;
  if (!r.count(&n, sizeof(uint64_t)) || n > max) return false;
  v->resize(n);
  for (uint64_t& x : *v) {
    if (!r.u64(&x)) return false;
  }
  return true;
}

Status invalid(std::string msg) { return Status(StatusCode::kParamInvalid, std::move(msg)); }

// Tensor indices of a layer range (empty when the range is).
std::vector<uint32_t> tensors_of(const std::optional<LayerRange>& layers, uint32_t per_layer) {
  std::vector<uint32_t> out;
  if (!layers) return out;
  for (uint64_t t = uint64_t{layers->start} * per_layer; t < uint64_t{layers->stop} * per_layer;
       ++t) {
    out.push_back(static_cast<uint32_t>(t));
  }
  return out;
}

}  // namespace

Result<std::vector<PullRequest>> plan_pull_requests(const CacheKey& key, const KvCache& dst,
                                                    const PullSpec& spec) {
  const uint32_t per_layer = spec.tensors_per_layer;
  if (per_layer == 0) return invalid("tensor_num_per_layer must be > 0");
  for (const auto* r : {&spec.src_layers, &spec.dst_layers}) {
    if (*r && ((*r)->start > (*r)->stop || uint64_t{(*r)->stop} * per_layer > kMaxTensors)) {
      return invalid("layer range [" + std::to_string((*r)->start) + ", " +
                     std::to_string((*r)->stop) + ") is invalid");
    }
  }
  PullRequest req;
  req.key = key;
  req.src_tensors = tensors_of(spec.src_layers, per_layer);
  std::vector<uint32_t> dst_tensors = tensors_of(spec.dst_layers, per_layer);
  const uint32_t num_tensors = dst.desc.num_tensors;
  if (dst_tensors.empty()) {
    for (uint32_t t = 0; t < num_tensors; ++t) dst_tensors.push_back(t);
  }
  if (dst_tensors.size() > kMaxTensors) {
    return invalid("a pull of more than " + std::to_string(kMaxTensors) +
                   " tensors: give layer ranges");
  }
  for (uint32_t t : dst_tensors) {
    if (t >= num_tensors) {
      return invalid("dst_layer_range reaches tensor " + std::to_string(t) + " of a cache of " +
                     std::to_string(num_tensors));
    }
  }
  if (!req.src_tensors.empty() && req.src_tensors.size() != dst_tensors.size()) {
    return invalid("src_layer_range gives " + std::to_string(req.src_tensors.size()) +
                   " tensors, the destination takes " + std::to_string(dst_tensors.size()));
  }
  const uint64_t rows = static_cast<uint64_t>(dst.desc.shape[0]);
  const uint64_t stride = dst.desc.tensor_bytes() / rows;
  if (spec.src_blocks.empty() && spec.dst_blocks.empty()) {
    if (spec.batch_index >= rows) {
      return invalid("batch_index " + std::to_string(spec.batch_index) + " is not below " +
                     std::to_string(rows));
    }
    const uint64_t dst_offset = spec.dst_offset.value_or(0);
    if (dst_offset >= stride) {
      return invalid("dst_cache_offset " + std::to_string(dst_offset) + " is not below " +
                     std::to_string(stride) + " bytes per batch");
    }
    const uint64_t size = spec.size < 0 ? stride - dst_offset : static_cast<uint64_t>(spec.size);
    if (size == 0 || size > stride - dst_offset) {
      return invalid("dst_cache_offset " + std::to_string(dst_offset) + " + size " +
                     std::to_string(size) + " exceeds the destination's " + std::to_string(stride) +
                     " bytes per batch");
    }
    for (uint32_t t : dst_tensors) {
      req.dst_addrs.push_back(dst.tensor_addrs[t] + spec.batch_index * stride + dst_offset);
    }
    req.size = size;
    req.src_offset = spec.src_offset.value_or(0);
    req.keep_key = spec.keep_keys || spec.src_offset.has_value() || spec.dst_offset.has_value();
    return std::vector<PullRequest>{std::move(req)};
  }
  if (spec.src_blocks.empty() || spec.src_blocks.size() != spec.dst_blocks.size()) {
    return invalid("prompt_blocks and decoder_blocks must be non-empty and of one size");
  }
  for (size_t i = 0; i < spec.dst_blocks.size(); ++i) {
    if (spec.dst_blocks[i] >= rows) {
      return invalid("decoder_blocks[" + std::to_string(i) +
                     "] = " + std::to_string(spec.dst_blocks[i]) + " is not below " +
                     std::to_string(rows) + " blocks");
    }
  }
  for (uint32_t t : dst_tensors) req.dst_addrs.push_back(dst.tensor_addrs[t]);
  req.dst_block_bytes = stride;
  req.keep_key = true;  // blocks keys stay until removed
  // Fit each request in one note (kMaxPeerMessageBytes, less headroom).
  const size_t fixed = 256 + 4 * req.src_tensors.size() + 8 * req.dst_addrs.size();
  const size_t budget = 60 * 1024 - 512;
  if (fixed + 16 > budget) return invalid("too many tensors in one pull_blocks");
  const size_t per_request =
      std::min({kMaxPullBlockPairs, (budget - fixed) / 16, kMaxPullRanges / req.dst_addrs.size()});
  std::vector<PullRequest> out;
  for (size_t i = 0; i < spec.src_blocks.size(); i += per_request) {
    PullRequest part = req;
    const size_t end = std::min(spec.src_blocks.size(), i + per_request);
    part.src_blocks.assign(spec.src_blocks.begin() + static_cast<std::ptrdiff_t>(i),
                           spec.src_blocks.begin() + static_cast<std::ptrdiff_t>(end));
    part.dst_blocks.assign(spec.dst_blocks.begin() + static_cast<std::ptrdiff_t>(i),
                           spec.dst_blocks.begin() + static_cast<std::ptrdiff_t>(end));
    out.push_back(std::move(part));
  }
  return out;
}

std::string encode_cache_key(const CacheKey& key) {
  ByteWriter w;
  w.u8(static_cast<uint8_t>(key.kind));
  w.u64(key.req_id);
  w.u64(key.prefix_id);
  w.u64(key.model_id);
  w.i64(key.cache_id);
  w.u32(key.batch_index);
  return w.take();
}

bool decode_cache_key(std::string_view in, CacheKey* key) {
  ByteReader r(in);
  uint8_t kind = 0;
  if (!r.u8(&kind) || kind > 2 || !r.u64(&key->req_id) || !r.u64(&key->prefix_id) ||
      !r.u64(&key->model_id) || !r.i64(&key->cache_id) || !r.u32(&key->batch_index)) {
    return false;
  }
  key->kind = static_cast<CacheKey::Kind>(kind);
  return r.at_end();
}

std::string encode_cache_info(const CacheInfo& info) {
  ByteWriter w;
  w.i64(info.cache_id);
  w.u32(info.batch_index);
  w.u8(info.is_blocks ? 1 : 0);
  w.u32(info.num_tensors);
  w.u64(info.tensor_bytes);
  w.u64(info.rows);
  put_list(w, info.tensor_addrs);
  return w.take();
}

bool decode_cache_info(std::string_view in, CacheInfo* info) {
  ByteReader r(in);
  uint8_t blocks = 0;
  if (!r.i64(&info->cache_id) || !r.u32(&info->batch_index) || !r.u8(&blocks) || blocks > 1 ||
      !r.u32(&info->num_tensors) || !r.u64(&info->tensor_bytes) || !r.u64(&info->rows) ||
      !get_list(r, &info->tensor_addrs, kMaxTensors)) {
    return false;
  }
  info->is_blocks = blocks == 1;
  return info->tensor_addrs.size() == info->num_tensors && r.at_end();
}

std::string encode_pull_request(const PullRequest& req) {
  ByteWriter w;
  w.u64(req.pull_id);
  w.u8(static_cast<uint8_t>(req.key.kind));
  w.u64(req.key.req_id);
  w.u64(req.key.prefix_id);
  w.u64(req.key.model_id);
  w.i64(req.key.cache_id);
  w.u32(req.key.batch_index);
  w.u32(static_cast<uint32_t>(req.src_tensors.size()));
  for (uint32_t t : req.src_tensors) w.u32(t);
  w.u64(req.src_offset);
  w.u64(req.size);
  w.u8(req.keep_key ? 1 : 0);
  put_list(w, req.dst_addrs);
  put_list(w, req.src_blocks);
  put_list(w, req.dst_blocks);
  w.u64(req.dst_block_bytes);
  return w.take();
}

bool decode_pull_request(std::string_view in, PullRequest* req) {
  ByteReader r(in);
  uint8_t kind = 0;
  uint8_t keep = 0;
  uint32_t n = 0;
  if (!r.u64(&req->pull_id) || !r.u8(&kind) || kind > 2 || !r.u64(&req->key.req_id) ||
      !r.u64(&req->key.prefix_id) || !r.u64(&req->key.model_id) || !r.i64(&req->key.cache_id) ||
      !r.u32(&req->key.batch_index) || !r.count(&n, sizeof(uint32_t)) || n > kMaxTensors) {
    return false;
  }
  req->key.kind = static_cast<CacheKey::Kind>(kind);
  req->src_tensors.resize(n);
  for (uint32_t& t : req->src_tensors) {
    if (!r.u32(&t)) return false;
  }
  if (!r.u64(&req->src_offset) || !r.u64(&req->size) || !r.u8(&keep) || keep > 1 ||
      !get_list(r, &req->dst_addrs, kMaxTensors) ||
      !get_list(r, &req->src_blocks, kMaxPullBlockPairs) ||
      !get_list(r, &req->dst_blocks, kMaxPullBlockPairs) || !r.u64(&req->dst_block_bytes)) {
    return false;
  }
  req->keep_key = keep == 1;
  return req->src_blocks.size() == req->dst_blocks.size() && r.at_end();
}

}  // namespace kvdist::core
