// copy_cache, copy_blocks, swap_blocks and read_tensor of one DataDist:
// bytes compared, bad input refused before anything is copied.
#include <gtest/gtest.h>

#include <cstring>
#include <memory>
#include <vector>

#include "bytes_hash.h"
#include "kvdist/kvdist.h"

namespace kvdist {
namespace {

using testing::fill_pattern;
using testing::fnv1a;

class LocalCopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dd_ = std::make_unique<DataDist>(Role::kDecoder, 9);
    ASSERT_TRUE(dd_->init(Options()).ok());
  }
  CacheManager& cm() { return *dd_->cache_manager(); }
  KvCache alloc(uint32_t tensors, std::vector<int64_t> shape, uint64_t seed) {
    CacheDesc d;
    d.num_tensors = tensors;
    d.shape = std::move(shape);
    d.data_type = DataType::kUint8;
    auto c = cm().allocate_cache(d);
    EXPECT_TRUE(c.ok());
    for (uint32_t t = 0; t < tensors; ++t) {
      fill_pattern(reinterpret_cast<void*>(c->tensor_addrs[t]), d.tensor_bytes(), seed + t);
    }
    return c.value();
  }
  static uint64_t h(uint64_t addr, uint64_t len) {
    return fnv1a(reinterpret_cast<const void*>(addr), len);
  }
  std::unique_ptr<DataDist> dd_;
};

TEST_F(LocalCopyTest, CopyCacheMovesOneSliceRange) {
  KvCache src = alloc(2, {2, 1024}, 1);
  KvCache dst = alloc(2, {3, 512}, 50);
  const uint64_t untouched = h(dst.tensor_addrs[1], 3 * 512);
  CopySpec spec;
  spec.src_batch_index = 1;
  spec.dst_batch_index = 2;
  spec.offset = 100;
  spec.size = 400;
  ASSERT_TRUE(cm().copy_cache(dst, src, spec).ok());
  EXPECT_EQ(h(dst.tensor_addrs[1] + 2 * 512 + 100, 400), h(src.tensor_addrs[1] + 1024 + 100, 400));
  EXPECT_NE(h(dst.tensor_addrs[1], 3 * 512), untouched);
  // size -1 is the source slice from the offset: too big for dst's slice.
  spec.size = -1;
  EXPECT_EQ(cm().copy_cache(dst, src, spec).code(), StatusCode::kParamInvalid);
  spec.size = 400;
  spec.src_batch_index = 2;
  EXPECT_EQ(cm().copy_cache(dst, src, spec).code(), StatusCode::kParamInvalid);
  KvCache three = alloc(3, {2, 1024}, 9);
  EXPECT_EQ(cm().copy_cache(three, src).code(), StatusCode::kParamInvalid);
  ASSERT_TRUE(cm().deallocate_cache(src.cache_id).ok());
  EXPECT_EQ(cm().copy_cache(dst, src).code(), StatusCode::kKvCacheNotExist);
}

TEST_F(LocalCopyTest, CopyBlocksChecksEveryPairFirst) {
  KvCache c = alloc(2, {8, 256}, 3);
  const uint64_t b2 = h(c.tensor_addrs[0] + 2 * 256, 256);
  const uint64_t before = h(c.tensor_addrs[0], 8 * 256);
  EXPECT_EQ(cm().copy_blocks(c, {{2, 5}, {1, 8}}).code(), StatusCode::kParamInvalid);
  EXPECT_EQ(h(c.tensor_addrs[0], 8 * 256), before) << "nothing copied";
  ASSERT_TRUE(cm().copy_blocks(c, {{2, 5}, {2, 6}}).ok());
  EXPECT_EQ(h(c.tensor_addrs[0] + 5 * 256, 256), b2);
  EXPECT_EQ(h(c.tensor_addrs[0] + 6 * 256, 256), b2);
}

TEST_F(LocalCopyTest, SwapBlocksBothWaysWithHostMemory) {
  KvCache dev = alloc(2, {4, 128}, 7);
  std::vector<std::vector<uint8_t>> host_mem(2, std::vector<uint8_t>(6 * 128, 0));
  KvCache host;
  host.desc = dev.desc;
  host.desc.shape = {6, 128};
  host.desc.placement = Placement::kHost;
  for (auto& m : host_mem) host.tensor_addrs.push_back(reinterpret_cast<uint64_t>(m.data()));
  ASSERT_TRUE(cm().swap_blocks(dev, host, {{3, 5}, {0, 1}}).ok());  // swap out
  EXPECT_EQ(fnv1a(host_mem[1].data() + 5 * 128, 128), h(dev.tensor_addrs[1] + 3 * 128, 128));
  std::memset(host_mem[0].data() + 2 * 128, 0x5A, 128);
  ASSERT_TRUE(cm().swap_blocks(host, dev, {{2, 0}}).ok());  // swap in
  EXPECT_EQ(h(dev.tensor_addrs[0], 128), fnv1a(host_mem[0].data() + 2 * 128, 128));
  EXPECT_EQ(cm().swap_blocks(host, dev, {{6, 0}}).code(), StatusCode::kParamInvalid);
  EXPECT_EQ(cm().swap_blocks(dev, dev, {{0, 0}}).code(), StatusCode::kParamInvalid);
  host.desc.shape = {6, 64};
  EXPECT_EQ(cm().swap_blocks(host, dev, {{0, 0}}).code(), StatusCode::kParamInvalid);
}

TEST_F(LocalCopyTest, ReadTensorIsACopyOfTheWholeTensor) {
  KvCache c = alloc(2, {2, 300}, 11);
  auto t = cm().read_tensor(c, 1);
  ASSERT_TRUE(t.ok());
  ASSERT_EQ(t->size(), 600u);
  EXPECT_EQ(fnv1a(t->data(), t->size()), h(c.tensor_addrs[1], 600));
  EXPECT_EQ(cm().read_tensor(c, 2).status().code(), StatusCode::kParamInvalid);
}

}  // namespace
}  // namespace kvdist
