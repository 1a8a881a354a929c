// pull_cache / pull_blocks between real processes over loopback UCX: this
// process is the PROMPT that keeps caches under keys, kvdist_test_peer
// children are DECODERs that pull them. Every test compares real bytes.
#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "bytes_hash.h"
#include "decoder_peer.h"
#include "kvdist/kvdist.h"
#include "peer_process.h"

namespace kvdist {
namespace {

using testing::code;
using testing::DecoderPeer;
using testing::fill_pattern;
using testing::fnv1a;
using testing::RemoteCache;
using testing::s;

constexpr uint64_t kPrompt = 1;
constexpr uint8_t kCanary = 0xA5;

uint64_t canary_hash(uint64_t len) {
  std::vector<uint8_t> v(len, kCanary);
  return fnv1a(v.data(), len);
}

uint64_t local_hash(uint64_t addr, uint64_t len) {
  return fnv1a(reinterpret_cast<const void*>(addr), len);
}

CacheKey request_key(uint64_t req_id) {
  CacheKey k;
  k.prompt_cluster_id = kPrompt;
  k.req_id = req_id;
  return k;
}

class PullTest : public ::testing::Test {
 protected:
  // The pool's bytes in use once they reach `want` (freed memory goes back
  // after every peer confirmed the withdrawal), or what they are after 5 s.
  uint64_t pool_settles_at(uint64_t want) {
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    uint64_t now = cm().pool_bytes_in_use();
    while (now != want && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      now = cm().pool_bytes_in_use();
    }
    return now;
  }

  void SetUp() override {
    prompt_ = std::make_unique<DataDist>(Role::kPrompt, kPrompt);
    Options o;
    o.listen_ip_info = "127.0.0.1:0";
    o.transfer_timeout_ms = 5000;
    ASSERT_TRUE(prompt_->init(o).ok());
    port_ = prompt_->listen_port();
  }
  void TearDown() override { prompt_->finalize(); }

  CacheManager& cm() { return *prompt_->cache_manager(); }

  static CacheDesc desc(uint32_t tensors, std::vector<int64_t> shape) {
    CacheDesc d;
    d.num_tensors = tensors;
    d.shape = std::move(shape);
    d.data_type = DataType::kUint8;
    return d;
  }
  void pattern(const KvCache& c) {
    for (uint32_t t = 0; t < c.desc.num_tensors; ++t) {
      fill_pattern(reinterpret_cast<void*>(c.tensor_addrs[t]), c.desc.tensor_bytes(), 300 + t);
    }
    // The serving thread reads these bytes only after a DECODER asked: an
    // order through the other process, which TSan cannot see. Taking the
    // registry's lock here (the serving thread takes it to find the cache)
    // makes the order visible to it.
    (void)cm().pool_bytes_in_use();
  }
  // A keyed source: keys req first.. for its batches, patterned.
  KvCache keyed(uint32_t tensors, std::vector<int64_t> shape, std::vector<CacheKey> keys) {
    auto c = cm().allocate_cache(desc(tensors, std::move(shape)), keys);
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    pattern(c.value());
    return c.value();
  }
  static RemoteCache canaried(DecoderPeer& d, uint32_t tensors, std::vector<int64_t> dims,
                              bool blocks = false) {
    RemoteCache c = d.alloc(blocks, tensors, dims);
    uint64_t bytes = 1;
    for (int64_t x : dims) bytes *= static_cast<uint64_t>(x);
    for (uint64_t a : c.addrs) d.fill(a, bytes, kCanary);
    return c;
  }

  std::unique_ptr<DataDist> prompt_;
  uint16_t port_ = 0;
};

TEST_F(PullTest, RequestKeyPullsItsBatchAndIsUsedUp) {
  DecoderPeer d(2, kPrompt, port_);
  const uint64_t slice = 4096;
  KvCache src = keyed(4, {3, 4096}, {request_key(10), request_key(11), request_key(12)});
  RemoteCache dst = canaried(d, 4, {2, 4096});
  // Key 11 names batch 1 of the source; it lands in batch 1 here.
  ASSERT_EQ(d.pull(dst.id, kPrompt, "req:11", "batch=1"), StatusCode::kSuccess);
  for (uint32_t t = 0; t < 4; ++t) {
    EXPECT_EQ(d.hash(dst.addrs[t] + slice, slice), local_hash(src.tensor_addrs[t] + slice, slice))
        << "tensor " << t;
    EXPECT_EQ(d.hash(dst.addrs[t], slice), canary_hash(slice)) << "batch 0 untouched";
  }
  // A request key is used up by its pull (as the original); others stay.
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:11"), StatusCode::kKvCacheNotExist);
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:12"), StatusCode::kSuccess);
  EXPECT_EQ(d.hash(dst.addrs[3], slice), local_hash(src.tensor_addrs[3] + 2 * slice, slice));
}

TEST_F(PullTest, FreedCacheLivesUntilItsKeysArePulledOrRemoved) {
  DecoderPeer d(2, kPrompt, port_);
  const uint64_t before = cm().pool_bytes_in_use();
  KvCache src = keyed(2, {2, 8192}, {request_key(20), request_key(21)});
  std::vector<uint64_t> want;
  for (uint32_t t = 0; t < 2; ++t) want.push_back(local_hash(src.tensor_addrs[t], 8192));
  ASSERT_TRUE(cm().deallocate_cache(src.cache_id).ok());
  EXPECT_GT(cm().pool_bytes_in_use(), before) << "keys keep the memory";
  RemoteCache dst = canaried(d, 2, {1, 8192});
  ASSERT_EQ(d.pull(dst.id, kPrompt, "req:20"), StatusCode::kSuccess);
  for (uint32_t t = 0; t < 2; ++t) EXPECT_EQ(d.hash(dst.addrs[t], 8192), want[t]);
  EXPECT_GT(cm().pool_bytes_in_use(), before) << "key 21 still holds it";
  ASSERT_TRUE(cm().remove_cache_key(request_key(21)).ok());
  EXPECT_EQ(pool_settles_at(before), before);
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:21"), StatusCode::kKvCacheNotExist);
  // By id, the freed cache is gone too.
  EXPECT_EQ(d.pull(dst.id, kPrompt, "id:" + s(static_cast<uint64_t>(src.cache_id)) + ":0"),
            StatusCode::kKvCacheNotExist);
}

TEST_F(PullTest, PrefixKeysStayAndOffsetPullsKeepRequestKeys) {
  DecoderPeer d(2, kPrompt, port_);
  CacheKey prefix;
  prefix.prompt_cluster_id = kPrompt;
  prefix.prefix_id = 7;
  KvCache shared = keyed(2, {1, 1024}, {prefix});
  KvCache req = keyed(2, {1, 1024}, {request_key(30)});
  RemoteCache dst = canaried(d, 2, {1, 1024});
  EXPECT_EQ(d.pull(dst.id, kPrompt, "prefix:7"), StatusCode::kSuccess);
  // A read by id of a batch under a prefix key does not use the key up.
  EXPECT_EQ(d.pull(dst.id, kPrompt, "id:" + s(static_cast<uint64_t>(shared.cache_id)) + ":0"),
            StatusCode::kSuccess);
  EXPECT_EQ(d.pull(dst.id, kPrompt, "prefix:7"), StatusCode::kSuccess);
  EXPECT_EQ(d.hash(dst.addrs[1], 1024), local_hash(shared.tensor_addrs[1], 1024));
  // 256 bytes from byte 512 of the source to byte 128 of the destination.
  ASSERT_EQ(d.pull(dst.id, kPrompt, "req:30", "soff=512 doff=128 size=256"), StatusCode::kSuccess);
  EXPECT_EQ(d.hash(dst.addrs[0] + 128, 256), local_hash(req.tensor_addrs[0] + 512, 256));
  EXPECT_EQ(d.hash(dst.addrs[0] + 384, 640), local_hash(shared.tensor_addrs[0] + 384, 640))
      << "bytes past the pulled range keep the prefix pull's";
  // Offsets given: the key stays (as the original).
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:30"), StatusCode::kSuccess);
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:30"), StatusCode::kKvCacheNotExist);
  cm().remove_cache_key(prefix);
  EXPECT_EQ(d.pull(dst.id, kPrompt, "prefix:7"), StatusCode::kKvCacheNotExist);
}

TEST_F(PullTest, LayerRangesMapSourceTensorsToDestinationTensors) {
  DecoderPeer d(2, kPrompt, port_);
  KvCache src = keyed(8, {1, 2048}, {});  // 4 layers, no key: by id
  RemoteCache dst = canaried(d, 4, {1, 2048});
  const std::string key = "id:" + s(static_cast<uint64_t>(src.cache_id)) + ":0";
  // Source layers 2..3 (tensors 4..7) into destination layers 0..1.
  ASSERT_EQ(d.pull(dst.id, kPrompt, key, "src=2:4 dst=0:2"), StatusCode::kSuccess);
  for (uint32_t t = 0; t < 4; ++t) {
    EXPECT_EQ(d.hash(dst.addrs[t], 2048), local_hash(src.tensor_addrs[4 + t], 2048));
  }
  // One tensor per layer: source layer 5 into destination layer 1.
  ASSERT_EQ(d.pull(dst.id, kPrompt, key, "src=5:6 dst=1:2 per=1"), StatusCode::kSuccess);
  EXPECT_EQ(d.hash(dst.addrs[1], 2048), local_hash(src.tensor_addrs[5], 2048));
  EXPECT_EQ(d.hash(dst.addrs[0], 2048), local_hash(src.tensor_addrs[4], 2048));
}

TEST_F(PullTest, BlocksPullMovesThePairsAndNothingElse) {
  DecoderPeer d(2, kPrompt, port_);
  CacheKey bk;
  bk.kind = CacheKey::Kind::kBlocks;
  bk.prompt_cluster_id = kPrompt;
  bk.model_id = 3;
  auto c = cm().allocate_blocks_cache(desc(2, {16, 512}), bk);
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  pattern(c.value());
  RemoteCache dst = canaried(d, 2, {16, 512}, true);
  // A run (1,2,3 -> 4,5,6) and scattered pairs.
  ASSERT_EQ(d.pull(dst.id, kPrompt, "blocks:3", "sb=1,2,3,9,0 db=4,5,6,15,0"),
            StatusCode::kSuccess);
  const std::vector<std::pair<uint64_t, uint64_t>> pairs = {
      {1, 4}, {2, 5}, {3, 6}, {9, 15}, {0, 0}};
  for (uint32_t t = 0; t < 2; ++t) {
    std::vector<bool> written(16, false);
    for (auto [sb, db] : pairs) {
      EXPECT_EQ(d.hash(dst.addrs[t] + db * 512, 512),
                local_hash(c->tensor_addrs[t] + sb * 512, 512));
      written[db] = true;
    }
    for (uint64_t b = 0; b < 16; ++b) {
      if (!written[b]) EXPECT_EQ(d.hash(dst.addrs[t] + b * 512, 512), canary_hash(512));
    }
  }
  // Blocks keys stay; a source block past the cache is refused, nothing written.
  EXPECT_EQ(d.pull(dst.id, kPrompt, "blocks:3", "sb=16 db=7"), StatusCode::kParamInvalid);
  EXPECT_EQ(d.hash(dst.addrs[0] + 7 * 512, 512), canary_hash(512));
  EXPECT_EQ(d.pull(dst.id, kPrompt, "blocks:3", "sb=1 db=16"), StatusCode::kParamInvalid);
  // A blocks key goes with its cache.
  cm().deallocate_cache(c->cache_id);
  EXPECT_EQ(d.pull(dst.id, kPrompt, "blocks:3", "sb=1 db=1"), StatusCode::kKvCacheNotExist);
}

TEST_F(PullTest, ManyBlockPairsSplitIntoSeveralRequests) {
  DecoderPeer d(2, kPrompt, port_);
  CacheKey bk;
  bk.kind = CacheKey::Kind::kBlocks;
  bk.prompt_cluster_id = kPrompt;
  auto c = cm().allocate_blocks_cache(desc(2, {6000, 64}), bk);
  ASSERT_TRUE(c.ok());
  pattern(c.value());
  RemoteCache dst = canaried(d, 2, {6000, 64}, true);
  // 5000 pairs, reversed (no runs): more than one note holds.
  std::string sb = "sb=";
  std::string db = "db=";
  for (uint64_t i = 0; i < 5000; ++i) {
    sb += (i ? "," : "") + s(i);
    db += (i ? "," : "") + s(5999 - i);
  }
  ASSERT_EQ(d.pull(dst.id, kPrompt, "blocks:0", sb + " " + db), StatusCode::kSuccess);
  for (uint64_t i : {0ull, 2047ull, 2048ull, 4999ull}) {
    EXPECT_EQ(d.hash(dst.addrs[1] + (5999 - i) * 64, 64),
              local_hash(c->tensor_addrs[1] + i * 64, 64));
  }
  EXPECT_EQ(d.hash(dst.addrs[1], 1000 * 64), canary_hash(1000 * 64));
}

TEST_F(PullTest, BadPullsAreRefusedAndWriteNothing) {
  DecoderPeer d(2, kPrompt, port_);
  KvCache src = keyed(2, {2, 1024}, {request_key(40)});
  RemoteCache dst = canaried(d, 2, {1, 1024});
  RemoteCache three = canaried(d, 3, {1, 1024});
  std::string why;
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:99"), StatusCode::kKvCacheNotExist);
  EXPECT_EQ(d.pull(dst.id, 5, "req:40"), StatusCode::kNotYetLink);
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:40", "batch=1"), StatusCode::kParamInvalid);
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:40", "soff=1000 size=100", &why),
            StatusCode::kParamInvalid);
  EXPECT_NE(why.find("exceeds the source"), std::string::npos) << why;
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:40", "doff=1000 size=100"), StatusCode::kParamInvalid);
  EXPECT_EQ(d.pull(three.id, kPrompt, "req:40", "", &why), StatusCode::kParamInvalid);
  EXPECT_NE(why.find("the source gives 2 tensors, the destination takes 3"), std::string::npos)
      << why;
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:40", "src=0:2"), StatusCode::kParamInvalid);
  EXPECT_EQ(d.pull(dst.id, kPrompt, "id:" + s(static_cast<uint64_t>(src.cache_id)) + ":2"),
            StatusCode::kKvCacheNotExist);
  for (uint64_t a : dst.addrs) EXPECT_EQ(d.hash(a, 1024), canary_hash(1024));
  for (uint64_t a : three.addrs) EXPECT_EQ(d.hash(a, 1024), canary_hash(1024));
  // Refused pulls do not use the key up (the original's do).
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:40"), StatusCode::kSuccess);
  // Into a freed destination.
  d.proc().ok("free " + s(static_cast<uint64_t>(dst.id)));
  EXPECT_EQ(d.pull(dst.id, kPrompt, "id:" + s(static_cast<uint64_t>(src.cache_id)) + ":0"),
            StatusCode::kKvCacheNotExist);
}

// The source freed while pulls by id read it: each pull either gets every
// byte right or fails with kKvCacheNotExist; the memory goes back after.
TEST_F(PullTest, PullsRacingFreesGetRightBytesOrNotExist) {
  DecoderPeer d(2, kPrompt, port_);
  const uint64_t bytes = 1 << 20;
  RemoteCache dst = d.alloc(false, 2, {1, static_cast<int64_t>(bytes)});
  const uint64_t before = cm().pool_bytes_in_use();
  int ok = 0;
  int gone = 0;
  for (int round = 0; round < 40; ++round) {
    KvCache src = keyed(2, {1, static_cast<int64_t>(bytes)}, {});
    const uint64_t want = local_hash(src.tensor_addrs[1], bytes);
    ASSERT_TRUE(d.proc().post("pull " + s(static_cast<uint64_t>(dst.id)) + " " + s(kPrompt) +
                              " id:" + s(static_cast<uint64_t>(src.cache_id)) + ":0"));
    std::this_thread::sleep_for(std::chrono::microseconds(100 * (round % 10)));
    ASSERT_TRUE(cm().deallocate_cache(src.cache_id).ok());
    std::string answer = d.proc().answer(30000);
    ASSERT_EQ(answer.rfind("ok ", 0), 0u) << answer;
    StatusCode c = code(answer.substr(3, answer.find(' ', 3) - 3));
    if (c == StatusCode::kSuccess) {
      ++ok;
      EXPECT_EQ(d.hash(dst.addrs[1], bytes), want) << "round " << round;
    } else {
      ++gone;
      EXPECT_EQ(c, StatusCode::kKvCacheNotExist) << answer;
    }
  }
  std::cout << "pulls that won: " << ok << ", found the cache gone: " << gone << std::endl;
  EXPECT_EQ(pool_settles_at(before), before);
}

// As the original: a pull from a PROMPT that is pushing to the same
// DECODER in an exclusive task is LLM_LINK_BUSY; after the push it works.
TEST_F(PullTest, PullDuringAnExclusivePushIsBusy) {
  DecoderPeer d(2, kPrompt, port_);
  KvCache src = keyed(2, {1, 1024}, {request_key(50)});
  RemoteCache dst = canaried(d, 2, {1, 1024});
  struct Hold : LayerSynchronizer {
    std::atomic<bool> go{false};
    bool synchronize_layer(uint32_t, std::optional<int32_t>) override {
      for (int i = 0; i < 2000 && !go; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      return go.load();
    }
  };
  auto hold = std::make_shared<Hold>();
  TransferConfig cfg;
  cfg.dst_cluster_id = 2;
  cfg.dst_addrs = dst.addrs;
  TransferOptions opts;
  opts.exclusive = true;
  auto task = cm().transfer_cache_async(src, hold, {cfg}, {}, opts);
  ASSERT_TRUE(task.ok()) << task.status().to_string();
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:50"), StatusCode::kLinkBusy);
  hold->go = true;
  EXPECT_EQ(task->synchronize(10000), StatusCode::kSuccess);
  EXPECT_EQ(d.pull(dst.id, kPrompt, "req:50"), StatusCode::kSuccess);
}

TEST_F(PullTest, KeysAreCheckedAtAllocation) {
  auto too_many = cm().allocate_cache(desc(2, {1, 64}), {request_key(1), request_key(2)});
  EXPECT_EQ(too_many.status().code(), StatusCode::kParamInvalid);
  auto first = cm().allocate_cache(desc(2, {2, 64}), {request_key(1), CacheKey{}});
  ASSERT_TRUE(first.ok());
  auto again = cm().allocate_cache(desc(2, {1, 64}), {request_key(1)});
  EXPECT_EQ(again.status().code(), StatusCode::kFailed);
  auto twice = cm().allocate_cache(desc(2, {2, 64}), {request_key(3), request_key(3)});
  EXPECT_EQ(twice.status().code(), StatusCode::kFailed);
}

}  // namespace
}  // namespace kvdist

namespace kvdist {
namespace {

CacheKey by_id(uint64_t cluster, int64_t cache_id, uint32_t batch) {
  CacheKey k;
  k.kind = CacheKey::Kind::kCacheId;
  k.prompt_cluster_id = cluster;
  k.cache_id = cache_id;
  k.batch_index = batch;
  return k;
}

using PushTest = PullTest;

TEST_F(PushTest, PushByCacheIdWritesTheNamedBatchAndLayers) {
  DecoderPeer d(2, kPrompt, port_);
  KvCache src = keyed(8, {2, 1024}, {});
  RemoteCache dst = canaried(d, 8, {3, 1024});
  PushSpec spec;
  spec.src_batch_index = 1;
  ASSERT_TRUE(cm().push_cache(src, by_id(2, dst.id, 2), spec).ok());
  for (uint32_t t = 0; t < 8; ++t) {
    EXPECT_EQ(d.hash(dst.addrs[t] + 2048, 1024), local_hash(src.tensor_addrs[t] + 1024, 1024));
    EXPECT_EQ(d.hash(dst.addrs[t], 2048), canary_hash(2048));
  }
  // Source layers 0..1 into destination layers 2..3 of batch 0.
  spec = PushSpec();
  spec.src_layers = LayerRange{0, 2};
  spec.dst_layers = LayerRange{2, 4};
  ASSERT_TRUE(cm().push_cache(src, by_id(2, dst.id, 0), spec).ok());
  EXPECT_EQ(d.hash(dst.addrs[5], 1024), local_hash(src.tensor_addrs[1], 1024));
  EXPECT_EQ(d.hash(dst.addrs[1], 1024), canary_hash(1024));
}

TEST_F(PushTest, PushBlocksByIdAndRefusals) {
  DecoderPeer d(2, kPrompt, port_);
  auto src = cm().allocate_blocks_cache(desc(2, {8, 256}));
  ASSERT_TRUE(src.ok());
  pattern(src.value());
  RemoteCache dst = canaried(d, 2, {16, 256}, true);
  PushSpec spec;
  spec.src_blocks = {1, 2, 7};
  spec.dst_blocks = {10, 11, 0};
  ASSERT_TRUE(cm().push_cache(src.value(), by_id(2, dst.id, 0), spec).ok());
  EXPECT_EQ(d.hash(dst.addrs[1] + 11 * 256, 256), local_hash(src->tensor_addrs[1] + 2 * 256, 256));
  EXPECT_EQ(d.hash(dst.addrs[1], 256), local_hash(src->tensor_addrs[1] + 7 * 256, 256));
  EXPECT_EQ(d.hash(dst.addrs[0] + 256, 9 * 256), canary_hash(9 * 256));
  spec.dst_blocks = {10, 11, 16};
  EXPECT_EQ(cm().push_cache(src.value(), by_id(2, dst.id, 0), spec).code(),
            StatusCode::kParamInvalid);
  EXPECT_EQ(cm().push_cache(src.value(), by_id(2, dst.id + 100, 0), spec).code(),
            StatusCode::kKvCacheNotExist);
  EXPECT_EQ(cm().push_cache(src.value(), by_id(9, dst.id, 0), spec).code(),
            StatusCode::kNotYetLink);
  KvCache contiguous = keyed(2, {1, 512}, {});
  EXPECT_EQ(cm().push_cache(contiguous, by_id(2, dst.id, 0)).code(), StatusCode::kParamInvalid)
      << "a 512-byte batch into 256-byte rows";
  spec = PushSpec();
  spec.src_layers = LayerRange{0, 1};
  spec.dst_layers = LayerRange{0, 2};
  EXPECT_EQ(cm().push_cache(contiguous, by_id(2, dst.id, 0), spec).code(),
            StatusCode::kParamInvalid);
  EXPECT_EQ(d.hash(dst.addrs[0] + 256, 9 * 256), canary_hash(9 * 256));
}

}  // namespace
}  // namespace kvdist
