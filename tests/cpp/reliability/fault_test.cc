// Faults between real processes: the PROMPT killed mid-transfer (this
// process is the DECODER, a kvdist_test_peer child pushes), and the network
// cut between two "hosts" (two network namespaces joined by a veth pair that
// the test creates and always deletes; both ends are kvdist_test_peer
// children speaking UCX tcp over the veth).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bytes_hash.h"
#include "kvdist/kvdist.h"
#include "netns.h"
#include "peer_process.h"
#include "proc_stats.h"

namespace kvdist {
namespace {

using testing::fnv1a;
using testing::join;
using testing::NetnsStar;
using testing::PeerProcess;
using testing::remote_alloc;
using testing::remote_hash;
using testing::RemoteCache;
using testing::run_process;
using Clock = std::chrono::steady_clock;

constexpr uint8_t kCanary = 0xA5;

using testing::code;
using testing::s;
int64_t ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

uint64_t canary_hash(uint64_t len) {
  std::vector<uint8_t> v(len, kCanary);
  return fnv1a(v.data(), len);
}

// ---- the PROMPT killed mid-transfer ------------------------------------------

class PromptKilledTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kLayers = 4;
  static constexpr uint64_t kBytes = 65536;

  void SetUp() override {
    decoder_ = std::make_unique<DataDist>(Role::kDecoder, 2);
    ASSERT_TRUE(decoder_->init(Options{}).ok());
    start_prompt();
  }
  void TearDown() override {
    prompt_.reset();
    decoder_->finalize();
  }
  CacheManager& cm() { return *decoder_->cache_manager(); }

  void start_prompt() {
    prompt_ = std::make_unique<PeerProcess>();
    uint16_t port = static_cast<uint16_t>(std::stoul(prompt_->ok("init prompt 1 127.0.0.1:0")[1]));
    LinkResult r = decoder_->link_clusters({ClusterInfo{1, "127.0.0.1", port}}, 3000);
    ASSERT_EQ(r.status, StatusCode::kSuccess);
    src_ = remote_alloc(*prompt_, 2 * kLayers, kBytes);
    for (size_t t = 0; t < src_.addrs.size(); ++t) {
      prompt_->ok("pattern " + s(src_.addrs[t]) + " " + s(kBytes) + " " + s(100 + t));
    }
  }
  KvCache destination() {
    CacheDesc d;
    d.num_tensors = 2 * kLayers;
    d.shape = {1, static_cast<int64_t>(kBytes)};
    d.data_type = DataType::kUint8;
    auto c = cm().allocate_cache(d);
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    for (uint64_t a : c->tensor_addrs) std::memset(reinterpret_cast<void*>(a), kCanary, kBytes);
    return c.value();
  }
  void push(const KvCache& dst) {
    prompt_->ok("push " + s(static_cast<uint64_t>(src_.id)) + " 2 1" + join(dst.tensor_addrs));
  }
  uint64_t local_hash(const KvCache& c, uint32_t t) {
    return fnv1a(reinterpret_cast<const void*>(c.tensor_addrs[t]), kBytes);
  }

  std::unique_ptr<DataDist> decoder_;
  std::unique_ptr<PeerProcess> prompt_;
  RemoteCache src_;
};

TEST_F(PromptKilledTest, WaitsEndWithLinkFailedAndMemoryIsReused) {
  uint64_t pool_before = cm().pool_bytes_in_use();
  KvCache dst = destination();
  push(dst);
  prompt_->ok("release 0");
  ASSERT_EQ(cm().wait_layer(dst, 0, 5000).code(), StatusCode::kSuccess);
  for (uint32_t t = 0; t < 2; ++t) {
    EXPECT_EQ(local_hash(dst, t), remote_hash(*prompt_, src_.addrs[t], kBytes));
  }
  auto killed = Clock::now();
  prompt_->kill_now();
  // The layers that never came: an error, not a timeout, well before it.
  Status s1 = cm().wait_layer(dst, 1, 10000);
  int64_t waited = ms_since(killed);
  EXPECT_EQ(s1.code(), StatusCode::kLinkFailed) << s1.to_string();
  EXPECT_LT(waited, 2000);
  for (uint32_t l = 2; l < kLayers; ++l) {
    EXPECT_EQ(cm().wait_layer(dst, l, 100).code(), StatusCode::kLinkFailed);
  }
  std::printf("[figure] prompt killed: decoder wait_layer -> LLM_LINK_FAILED after %lld ms\n",
              static_cast<long long>(waited));
  // Layers 1.. were never released: untouched.
  for (uint32_t t = 2; t < 2 * kLayers; ++t) EXPECT_EQ(local_hash(dst, t), canary_hash(kBytes));
  EXPECT_FALSE(decoder_->check_link_status(1).ok());

  // Freed: back in the pool (no live peer can write), and allocated again.
  auto freed = Clock::now();
  ASSERT_TRUE(cm().deallocate_cache(dst.cache_id).ok());
  while (cm().pool_bytes_in_use() != pool_before && ms_since(freed) < 5000) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_EQ(cm().pool_bytes_in_use(), pool_before);
  std::printf("[figure] prompt killed: freed destination back in the pool after %lld ms\n",
              static_cast<long long>(ms_since(freed)));
  KvCache again = destination();
  // A restarted PROMPT (same cluster id) links and fills the new cache.
  start_prompt();
  push(again);
  prompt_->ok("release all");
  auto r = prompt_->ok("task_wait 10000");
  ASSERT_EQ(code(r[1]), StatusCode::kSuccess);
  for (uint32_t l = 0; l < kLayers; ++l) {
    ASSERT_EQ(cm().wait_layer(again, l, 5000).code(), StatusCode::kSuccess);
  }
  for (uint32_t t = 0; t < 2 * kLayers; ++t) {
    EXPECT_EQ(local_hash(again, t), remote_hash(*prompt_, src_.addrs[t], kBytes)) << t;
  }
}

TEST_F(PromptKilledTest, KilledBeforeTheFirstLayerFailsTheWaits) {
  KvCache dst = destination();
  push(dst);  // gated: nothing is sent
  auto killed = Clock::now();
  prompt_->kill_now();
  // No layer came from anyone, and no link is left: the wait cannot succeed.
  EXPECT_EQ(cm().wait_layer(dst, 0, 10000).code(), StatusCode::kLinkFailed);
  EXPECT_LT(ms_since(killed), 2000);
  for (uint32_t t = 0; t < 2 * kLayers; ++t) EXPECT_EQ(local_hash(dst, t), canary_hash(kBytes));
  EXPECT_TRUE(cm().deallocate_cache(dst.cache_id).ok());
}

// ---- the network cut -----------------------------------------------------------

TEST(NetworkCutTest, LinkDownMidTransferErrorsWithinTheDeadline) {
  NetnsStar net(1);
  if (!net.unavailable().empty()) GTEST_SKIP() << net.unavailable();
  // transfer_timeout of both peers. Under a sanitizer, emulated puts over
  // tcp are slow enough (TSan: < 1 MB/s) to need smaller layers and more time.
  constexpr int kTimeoutMs = testing::kSanitized ? 5000 : 2000;
  constexpr uint32_t kLayers = 4;
  constexpr uint64_t kBytes = testing::kSanitized ? 16384 : 262144;
  PeerProcess prompt(net.hub_env(), NetnsStar::in(net.hub()));
  PeerProcess decoder(net.spoke_env(0), NetnsStar::in(net.spoke(0)));
  std::string port =
      prompt.ok("init prompt 1 " + NetnsStar::hub_ip() + ":0 " + s(kTimeoutMs), 20000)[1];
  decoder.ok("init decoder 2 - " + s(kTimeoutMs), 20000);
  ASSERT_EQ(code(decoder.ok("link 1 " + NetnsStar::hub_ip() + " " + port + " 5000", 10000)[1]),
            StatusCode::kSuccess);
  RemoteCache dst = remote_alloc(decoder, 2 * kLayers, kBytes);
  for (uint64_t a : dst.addrs) decoder.ok("fill " + s(a) + " " + s(kBytes) + " " + s(kCanary));
  RemoteCache src = remote_alloc(prompt, 2 * kLayers, kBytes);
  for (size_t t = 0; t < src.addrs.size(); ++t) {
    prompt.ok("pattern " + s(src.addrs[t]) + " " + s(kBytes) + " " + s(7 + t));
  }
  prompt.ok("push " + s(static_cast<uint64_t>(src.id)) + " 2 1" + join(dst.addrs));
  prompt.ok("release 0");
  ASSERT_EQ(code(decoder.ok("wait " + s(static_cast<uint64_t>(dst.id)) + " 0 5000", 10000)[1]),
            StatusCode::kSuccess)
      << prompt.call("task_message 0");
  for (uint32_t t = 0; t < 2; ++t) {
    EXPECT_EQ(remote_hash(decoder, dst.addrs[t], kBytes),
              remote_hash(prompt, src.addrs[t], kBytes));
  }

  ASSERT_EQ(net.cut(0), 0);
  auto cut = Clock::now();
  prompt.ok("release all");
  // The PROMPT: its writes are not confirmed by the deadline, the config
  // fails (the link is closed so that none of them can land later).
  auto r = prompt.ok("task_wait " + s(3 * kTimeoutMs), 5 * kTimeoutMs);
  int64_t prompt_ms = ms_since(cut);
  StatusCode result = code(r[2]);
  EXPECT_TRUE(result == StatusCode::kTimeout || result == StatusCode::kLinkFailed) << r[2];
  EXPECT_EQ(code(r[1]), result);
  EXPECT_LT(prompt_ms, kTimeoutMs + 1500);
  // The DECODER hears nothing more: its wait ends at its own deadline.
  auto waited = Clock::now();
  StatusCode w = code(decoder.ok("wait " + s(static_cast<uint64_t>(dst.id)) + " 3 1000", 10000)[1]);
  int64_t decoder_ms = ms_since(waited);
  EXPECT_NE(w, StatusCode::kSuccess);
  EXPECT_LT(decoder_ms, 2500);
  EXPECT_EQ(remote_hash(decoder, dst.addrs[7], kBytes), canary_hash(kBytes));
  // The DECODER frees its cache: the PROMPT cannot confirm the withdrawal,
  // so its link is closed at the deadline and the memory comes back.
  auto freed = Clock::now();
  decoder.ok("free " + s(static_cast<uint64_t>(dst.id)));
  while (std::stoull(decoder.ok("pool_used")[1]) != 0 && ms_since(freed) < 4 * kTimeoutMs) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  int64_t freed_ms = ms_since(freed);
  EXPECT_EQ(std::stoull(decoder.ok("pool_used")[1]), 0u);
  EXPECT_LT(freed_ms, kTimeoutMs + 1500);
  std::printf(
      "[figure] network cut: PROMPT task ended with code %s after %lld ms (transfer_timeout %d "
      "ms); "
      "DECODER wait(1000 ms) -> %lld in %lld ms; freed memory back after %lld ms\n",
      r[2].c_str(), static_cast<long long>(prompt_ms), kTimeoutMs,
      static_cast<long long>(static_cast<int64_t>(w)), static_cast<long long>(decoder_ms),
      static_cast<long long>(freed_ms));
  // Both processes finalize in bounded time over the dead link.
  auto quit = Clock::now();
  prompt.call("quit", 100);
  decoder.call("quit", 100);
  EXPECT_EQ(prompt.wait_exit(15000), 0);  // exit(0): no crash in finalize
  EXPECT_EQ(decoder.wait_exit(15000), 0);
  std::printf("[figure] network cut: both peers exited after %lld ms\n",
              static_cast<long long>(ms_since(quit)));
}

}  // namespace
}  // namespace kvdist
