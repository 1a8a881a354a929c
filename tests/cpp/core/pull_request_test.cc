#include "core/pull_request.h"

#include <gtest/gtest.h>

#include "core/key_directory.h"

namespace kvdist::core {
namespace {

KvCache cache(uint32_t tensors, std::vector<int64_t> shape) {
  KvCache c;
  c.cache_id = 5;
  c.desc.num_tensors = tensors;
  c.desc.shape = std::move(shape);
  c.desc.data_type = DataType::kUint8;
  for (uint32_t t = 0; t < tensors; ++t) c.tensor_addrs.push_back(0x100000 * (t + 1));
  return c;
}

TEST(PullRequest, RoundTripAndTruncationRejected) {
  PullRequest r;
  r.pull_id = 9;
  r.key.kind = CacheKey::Kind::kCacheId;
  r.key.cache_id = 4;
  r.key.batch_index = 2;
  r.src_tensors = {2, 3};
  r.src_offset = 16;
  r.size = 64;
  r.keep_key = true;
  r.dst_addrs = {1000, 2000};
  const std::string bytes = encode_pull_request(r);
  PullRequest out;
  ASSERT_TRUE(decode_pull_request(bytes, &out));
  EXPECT_EQ(out.pull_id, 9u);
  EXPECT_EQ(out.key.kind, CacheKey::Kind::kCacheId);
  EXPECT_EQ(out.key.cache_id, 4);
  EXPECT_EQ(out.key.batch_index, 2u);
  EXPECT_EQ(out.src_tensors, r.src_tensors);
  EXPECT_EQ(out.dst_addrs, r.dst_addrs);
  EXPECT_TRUE(out.keep_key);
  for (size_t n = 0; n < bytes.size(); ++n) {
    EXPECT_FALSE(decode_pull_request(bytes.substr(0, n), &out)) << n;
  }
  EXPECT_FALSE(decode_pull_request(bytes + "x", &out));
  // Mismatched block lists are malformed.
  r.src_blocks = {1, 2};
  r.dst_blocks = {1};
  EXPECT_FALSE(decode_pull_request(encode_pull_request(r), &out));
}

TEST(PullRequest, PlanResolvesTheDestinationSide) {
  KvCache dst = cache(4, {2, 1024});
  CacheKey key;
  key.req_id = 1;
  PullSpec spec;
  spec.batch_index = 1;
  spec.dst_offset = 24;
  auto r = plan_pull_requests(key, dst, spec);
  ASSERT_TRUE(r.ok()) << r.status().to_string();
  ASSERT_EQ(r->size(), 1u);
  const PullRequest& q = r->front();
  EXPECT_EQ(q.size, 1000u);  // the slice less the offset
  EXPECT_TRUE(q.keep_key);
  ASSERT_EQ(q.dst_addrs.size(), 4u);
  EXPECT_EQ(q.dst_addrs[2], 0x300000u + 1024 + 24);
  EXPECT_TRUE(q.src_tensors.empty());

  spec = PullSpec();
  spec.src_layers = LayerRange{3, 5};
  spec.dst_layers = LayerRange{0, 2};
  r = plan_pull_requests(key, dst, spec);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->front().src_tensors, (std::vector<uint32_t>{6, 7, 8, 9}));
  EXPECT_FALSE(r->front().keep_key);

  const std::vector<PullSpec> bad = [] {
    std::vector<PullSpec> v(6);
    v[0].batch_index = 2;
    v[1].size = 1025;
    v[2].dst_offset = 1024;
    v[3].dst_layers = LayerRange{1, 3};
    v[4].src_layers = LayerRange{0, 1};
    v[5].tensors_per_layer = 0;
    return v;
  }();
  for (size_t i = 0; i < bad.size(); ++i) {
    EXPECT_EQ(plan_pull_requests(key, dst, bad[i]).status().code(), StatusCode::kParamInvalid) << i;
  }
}

TEST(PullRequest, BlocksPlanChecksAndSplits) {
  KvCache dst = cache(2, {5000, 64});
  CacheKey key;
  key.kind = CacheKey::Kind::kBlocks;
  PullSpec spec;
  for (uint64_t i = 0; i < 4500; ++i) {
    spec.src_blocks.push_back(i);
    spec.dst_blocks.push_back(4999 - i);
  }
  auto r = plan_pull_requests(key, dst, spec);
  ASSERT_TRUE(r.ok());
  ASSERT_GT(r->size(), 1u);
  size_t pairs = 0;
  for (const PullRequest& q : r.value()) {
    EXPECT_EQ(q.dst_block_bytes, 64u);
    EXPECT_LE(encode_pull_request(q).size(), 60u * 1024);
    pairs += q.src_blocks.size();
  }
  EXPECT_EQ(pairs, 4500u);
  spec.dst_blocks[7] = 5000;
  EXPECT_EQ(plan_pull_requests(key, dst, spec).status().code(), StatusCode::kParamInvalid);
  spec.dst_blocks.pop_back();
  EXPECT_EQ(plan_pull_requests(key, dst, spec).status().code(), StatusCode::kParamInvalid);
}

TEST(KeyDirectory, BindFindPullInPartsRemove) {
  KeyDirectory dir;
  KeyId req{KeyId::Space::kRequest, 7, 0};
  KeyBinding b;
  b.cache_id = 3;
  b.batch_index = 1;
  b.unpulled = {0, 1, 2, 3};
  ASSERT_TRUE(dir.bind(req, b).ok());
  EXPECT_EQ(dir.bind(req, b).code(), StatusCode::kFailed);
  // The same id as a prefix, or of another model, is another key.
  EXPECT_TRUE(dir.bind(KeyId{KeyId::Space::kPrefix, 7, 0}, b).ok());
  EXPECT_TRUE(dir.bind(KeyId{KeyId::Space::kRequest, 7, 1}, b).ok());
  EXPECT_EQ(dir.key_at(3, 1)->id, 7u);
  EXPECT_FALSE(dir.mark_pulled(req, {0, 1}));
  EXPECT_TRUE(dir.mark_pulled(req, {2, 3}));
  EXPECT_EQ(dir.find(req), nullptr);
  EXPECT_EQ(dir.remove_cache(3), 2u);
  EXPECT_EQ(dir.size(), 0u);
}

}  // namespace
}  // namespace kvdist::core
