#include "core/transfer_plan.h"

#include <gtest/gtest.h>

namespace kvdist::core {
namespace {

// A source cache of `layers` layers; shape [batch, 64] uint8 unless given.
KvCache make_cache(uint32_t layers, std::vector<int64_t> shape = {4, 64}) {
  KvCache c;
  c.cache_id = 1;
  c.desc.num_tensors = 2 * layers;
  c.desc.shape = std::move(shape);
  c.desc.data_type = DataType::kUint8;
  for (uint32_t t = 0; t < c.desc.num_tensors; ++t) c.tensor_addrs.push_back(0x100000 * (t + 1));
  return c;
}

TransferConfig config(uint32_t layers, std::optional<LayerRange> range = std::nullopt) {
  TransferConfig c;
  c.dst_cluster_id = 2;
  uint32_t n = range ? range->size() : layers;
  for (uint32_t i = 0; i < 2 * n; ++i) c.dst_addrs.push_back(0x9000000 + 0x1000 * i);
  c.src_layer_range = range;
  return c;
}

StatusCode validate(const KvCache& src, std::vector<TransferConfig> cfgs,
                    const BlockMapping& b = {}) {
  return validate_transfer(src, cfgs, b).code();
}

TEST(ValidateTransfer, AcceptsFullRangeAndFillsIt) {
  std::vector<TransferConfig> cfgs{config(3)};
  ASSERT_TRUE(validate_transfer(make_cache(3), cfgs, {}).ok());
  ASSERT_TRUE(cfgs[0].src_layer_range.has_value());
  EXPECT_EQ(cfgs[0].src_layer_range->start, 0u);
  EXPECT_EQ(cfgs[0].src_layer_range->stop, 3u);
}

TEST(ValidateTransfer, BlocksToCacheIsRejected) {
  BlockMapping b;
  b.src_block_indices = {0, 1};
  EXPECT_EQ(validate(make_cache(2), {config(2)}, b), StatusCode::kParamInvalid);
}

TEST(ValidateTransfer, BlockCountsMustMatch) {
  BlockMapping b;
  b.src_block_indices = {0, 1};
  b.dst_block_indices = {0};
  Status s = [&] {
    std::vector<TransferConfig> c{config(2)};
    return validate_transfer(make_cache(2), c, b);
  }();
  EXPECT_EQ(s.code(), StatusCode::kParamInvalid);
  EXPECT_NE(s.message().find("mismatch"), std::string::npos) << s.message();
}

TEST(ValidateTransfer, CacheToBlocksIsRejected) {
  BlockMapping b;
  b.dst_block_indices = {0};
  EXPECT_EQ(validate(make_cache(2), {config(2)}, b), StatusCode::kParamInvalid);
}

TEST(ValidateTransfer, DstBlockSizeNeedsBlocksDestination) {
  BlockMapping b;
  b.dst_block_memory_size = 128;
  EXPECT_EQ(validate(make_cache(2), {config(2)}, b), StatusCode::kParamInvalid);
  b.dst_block_memory_size = 0;  // 0 means "not given"
  EXPECT_EQ(validate(make_cache(2), {config(2)}, b), StatusCode::kSuccess);
}

TEST(ValidateTransfer, OddTensorCountIsRejected) {
  KvCache c = make_cache(2);
  c.desc.num_tensors = 3;
  c.tensor_addrs.resize(3);
  EXPECT_EQ(validate(c, {config(1)}), StatusCode::kParamInvalid);
}

TEST(ValidateTransfer, PagedSourceNeedsBatchIndexZero) {
  BlockMapping b;
  b.src_block_indices = {0};
  b.dst_block_indices = {0};
  TransferConfig c = config(2);
  c.src_batch_index = 1;
  EXPECT_EQ(validate(make_cache(2), {c}, b), StatusCode::kParamInvalid);
}

TEST(ValidateTransfer, LayerRangeMustLieInsideTheCache) {
  EXPECT_EQ(validate(make_cache(4), {config(4, LayerRange{2, 5})}), StatusCode::kParamInvalid);
  EXPECT_EQ(validate(make_cache(4), {config(4, LayerRange{3, 3})}), StatusCode::kParamInvalid);
  EXPECT_EQ(validate(make_cache(4), {config(4, LayerRange{3, 4})}), StatusCode::kSuccess);
}

TEST(ValidateTransfer, DstAddrCountMustBeTwicePerLayer) {
  TransferConfig c = config(4);
  c.dst_addrs.pop_back();
  std::vector<TransferConfig> cfgs{c};
  Status s = validate_transfer(make_cache(4), cfgs, {});
  EXPECT_EQ(s.code(), StatusCode::kParamInvalid);
  EXPECT_NE(s.message().find("expect 8 dst_addrs, got 7"), std::string::npos) << s.message();
}

TEST(ValidateTransfer, BatchIndexMustBeBelowBatchSize) {
  TransferConfig c = config(2);
  c.src_batch_index = 4;
  EXPECT_EQ(validate(make_cache(2), {c}), StatusCode::kParamInvalid);
  c.src_batch_index = 3;
  EXPECT_EQ(validate(make_cache(2), {c}), StatusCode::kSuccess);
}

TEST(ValidateTransfer, SourceBlockIndexMustExist) {
  BlockMapping b;
  b.src_block_indices = {0, 4};  // 4 blocks: 0..3
  b.dst_block_indices = {0, 1};
  EXPECT_EQ(validate(make_cache(2), {config(2)}, b), StatusCode::kParamInvalid);
}

TEST(ValidateTransfer, SmallerDestinationBlockIsRejected) {
  BlockMapping b;
  b.src_block_indices = {0};
  b.dst_block_indices = {0};
  b.dst_block_memory_size = 32;  // source blocks are 64 bytes
  EXPECT_EQ(validate(make_cache(2), {config(2)}, b), StatusCode::kParamInvalid);
  b.dst_block_memory_size = 128;
  EXPECT_EQ(validate(make_cache(2), {config(2)}, b), StatusCode::kSuccess);
}

TEST(ValidateTransfer, FirstViolationInOriginalOrderWins) {
  // Both the block mismatch (step 5) and the odd tensor count (step 9):
  // step 5 is reported.
  KvCache c = make_cache(2);
  c.desc.num_tensors = 3;
  c.tensor_addrs.resize(3);
  BlockMapping b;
  b.src_block_indices = {0};
  std::vector<TransferConfig> cfgs{config(1)};
  Status s = validate_transfer(c, cfgs, b);
  EXPECT_NE(s.message().find("blocks to cache"), std::string::npos) << s.message();
}

TEST(PlanTransfer, ContiguousSendsOneBatchSlicePerTensor) {
  KvCache src = make_cache(2);  // [4, 64]: slice 64 bytes
  std::vector<TransferConfig> cfgs{config(2)};
  cfgs[0].src_batch_index = 2;
  ASSERT_TRUE(validate_transfer(src, cfgs, {}).ok());
  TransferPlan p = plan_transfer(src, cfgs, {});
  ASSERT_EQ(p.configs.size(), 1u);
  ASSERT_EQ(p.configs[0].puts.size(), 2u);
  const auto& layer1 = p.configs[0].puts[1];
  ASSERT_EQ(layer1.size(), 2u);
  EXPECT_EQ(layer1[0].src, src.tensor_addrs[2] + 2 * 64);
  EXPECT_EQ(layer1[0].dst, cfgs[0].dst_addrs[2]);
  EXPECT_EQ(layer1[0].len, 64u);
  EXPECT_EQ(layer1[1].src, src.tensor_addrs[3] + 2 * 64);
  EXPECT_EQ(layer1[1].dst, cfgs[0].dst_addrs[3]);
  EXPECT_EQ(p.total_bytes, 4u * 64);
}

TEST(PlanTransfer, SubRangeIndexesDstAddrsFromRangeStart) {
  KvCache src = make_cache(4);
  std::vector<TransferConfig> cfgs{config(4, LayerRange{2, 4})};
  ASSERT_TRUE(validate_transfer(src, cfgs, {}).ok());
  TransferPlan p = plan_transfer(src, cfgs, {});
  ASSERT_EQ(p.configs[0].puts.size(), 2u);
  EXPECT_EQ(p.configs[0].puts[0][0].src, src.tensor_addrs[4]);  // layer 2, K
  EXPECT_EQ(p.configs[0].puts[0][0].dst, cfgs[0].dst_addrs[0]);
  EXPECT_EQ(p.configs[0].puts[1][1].src, src.tensor_addrs[7]);  // layer 3, V
  EXPECT_EQ(p.configs[0].puts[1][1].dst, cfgs[0].dst_addrs[3]);
}

TEST(PlanTransfer, PagedTransferMergesConsecutiveBlocks) {
  KvCache src = make_cache(1, {8, 16});  // 8 blocks of 16 bytes
  BlockMapping b;
  b.src_block_indices = {0, 1, 2, 5, 7, 6};
  b.dst_block_indices = {3, 4, 5, 0, 1, 2};
  std::vector<TransferConfig> cfgs{config(1)};
  ASSERT_TRUE(validate_transfer(src, cfgs, b).ok());
  TransferPlan p = plan_transfer(src, cfgs, b);
  const auto& puts = p.configs[0].puts[0];
  // Per tensor: {0,1,2}->{3,4,5} merged, 5->0, 7->1, 6->2.
  ASSERT_EQ(puts.size(), 8u);
  EXPECT_EQ(puts[0].src, src.tensor_addrs[0]);
  EXPECT_EQ(puts[0].dst, cfgs[0].dst_addrs[0] + 3 * 16);
  EXPECT_EQ(puts[0].len, 3u * 16);
  EXPECT_EQ(puts[1].src, src.tensor_addrs[0] + 5 * 16);
  EXPECT_EQ(puts[1].dst, cfgs[0].dst_addrs[0]);
  EXPECT_EQ(puts[1].len, 16u);
  EXPECT_EQ(puts[4].src, src.tensor_addrs[1]);  // V tensor starts again
  EXPECT_EQ(p.total_puts, 8u);
  EXPECT_EQ(p.total_bytes, 2u * 6 * 16);
}

TEST(PlanTransfer, LargerDestinationBlocksAreNotMerged) {
  KvCache src = make_cache(1, {4, 16});
  BlockMapping b;
  b.src_block_indices = {0, 1};
  b.dst_block_indices = {2, 3};
  b.dst_block_memory_size = 64;
  std::vector<TransferConfig> cfgs{config(1)};
  ASSERT_TRUE(validate_transfer(src, cfgs, b).ok());
  TransferPlan p = plan_transfer(src, cfgs, b);
  const auto& puts = p.configs[0].puts[0];
  ASSERT_EQ(puts.size(), 4u);
  EXPECT_EQ(puts[0].dst, cfgs[0].dst_addrs[0] + 2 * 64);
  EXPECT_EQ(puts[0].len, 16u);
  EXPECT_EQ(puts[1].src, src.tensor_addrs[0] + 16);
  EXPECT_EQ(puts[1].dst, cfgs[0].dst_addrs[0] + 3 * 64);
}

}  // namespace
}  // namespace kvdist::core

namespace kvdist::core {
namespace {

// vLLM's CPU layout: one tensor per layer ([blocks, heads, block_size, 2 * head]).
TEST(PlanTransfer, OneTensorPerLayerPagedPutsOneRunPerLayer) {
  KvCache src;
  src.cache_id = 1;
  src.desc.num_tensors = 3;
  src.desc.tensors_per_layer = 1;
  src.desc.shape = {8, 256};  // 8 blocks of 256 bytes
  src.desc.data_type = DataType::kUint8;
  src.is_blocks = true;
  for (uint32_t t = 0; t < 3; ++t) src.tensor_addrs.push_back(0x100000 * (t + 1));
  TransferConfig c;
  c.dst_cluster_id = 2;
  c.dst_addrs = {0x9000000, 0x9100000, 0x9200000};
  BlockMapping b;
  b.src_block_indices = {2, 3, 7};
  b.dst_block_indices = {5, 6, 0};
  std::vector<TransferConfig> cfgs{c};
  ASSERT_TRUE(validate_transfer(src, cfgs, b).ok());
  TransferPlan plan = plan_transfer(src, cfgs, b);
  EXPECT_EQ(plan.num_layers, 3u);
  ASSERT_EQ(plan.configs[0].puts.size(), 3u);
  const auto& l1 = plan.configs[0].puts[1];
  ASSERT_EQ(l1.size(), 2u);  // blocks 2,3 -> 5,6 merged; 7 -> 0
  EXPECT_EQ(l1[0].src, 0x200000u + 2 * 256);
  EXPECT_EQ(l1[0].dst, 0x9100000u + 5 * 256);
  EXPECT_EQ(l1[0].len, 512u);
  EXPECT_EQ(l1[1].src, 0x200000u + 7 * 256);
  EXPECT_EQ(l1[1].dst, 0x9100000u);
  EXPECT_EQ(plan.total_bytes, 3u * 3 * 256);

  // Two addresses per layer are one too many here.
  cfgs[0].dst_addrs.push_back(0x9300000);
  cfgs[0].src_layer_range.reset();
  EXPECT_EQ(validate_transfer(src, cfgs, b).code(), StatusCode::kParamInvalid);
  src.desc.num_tensors = 3;
  src.desc.tensors_per_layer = 2;  // 3 tensors cannot make layers of 2
  cfgs[0].dst_addrs.pop_back();
  EXPECT_EQ(validate_transfer(src, cfgs, b).code(), StatusCode::kParamInvalid);
}

}  // namespace
}  // namespace kvdist::core
