// Hostile input at a PROMPT's listener: kvdist_hostile_client (raw UCX,
// seeded) sends ≥ 10,000 malformed, truncated, oversized and random
// handshake and control messages across hundreds of connections, claims a
// linked DECODER's cluster id, speaks wrong protocol versions. The PROMPT
// (a kvdist_test_peer child) must live on, refuse or close those
// connections, keep its legitimate link, serve a new DECODER with every
// byte right, and hold no more memory or descriptors than before.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "bytes_hash.h"
#include "kvdist/kvdist.h"
#include "peer_process.h"
#include "proc_stats.h"

namespace kvdist {
namespace {

using testing::fnv1a;
using testing::PeerProcess;
using Clock = std::chrono::steady_clock;

using testing::code;
using testing::s;

long field(const std::string& out, const std::string& name) {
  auto at = out.find(name + "=");
  return at == std::string::npos ? -1 : std::atol(out.c_str() + at + name.size() + 1);
}

class HostileInputTest : public ::testing::Test {
 protected:
  static constexpr uint32_t kLayers = 2;
  static constexpr uint64_t kBytes = 32768;

  void SetUp() override {
    port_ = std::stoul(prompt_.ok("init prompt 1 127.0.0.1:0")[1]);
    auto r = prompt_.ok("alloc 0 " + s(2 * kLayers) + " 1 " + s(kBytes));
    src_id_ = std::stoll(r[1]);
    for (size_t i = 2; i < r.size(); ++i) src_.push_back(std::stoull(r[i]));
    for (size_t t = 0; t < src_.size(); ++t) {
      prompt_.ok("pattern " + s(src_[t]) + " " + s(kBytes) + " " + s(50 + t));
    }
  }

  // Links a DECODER (if not yet), and has the PROMPT push into a fresh cache
  // of it; every byte compared.
  void legit_transfer(DataDist& decoder) {
    if (!decoder.check_link_status(1).ok()) {
      ASSERT_EQ(decoder.link_clusters({ClusterInfo{1, "127.0.0.1", port()}}, 3000).status,
                StatusCode::kSuccess);
    }
    CacheDesc d;
    d.num_tensors = 2 * kLayers;
    d.shape = {1, static_cast<int64_t>(kBytes)};
    d.data_type = DataType::kUint8;
    auto dst = decoder.cache_manager()->allocate_cache(d);
    ASSERT_TRUE(dst.ok());
    std::string cmd =
        "push " + s(static_cast<uint64_t>(src_id_)) + " " + s(decoder.cluster_id()) + " 0";
    for (uint64_t a : dst->tensor_addrs) cmd += " " + s(a);
    prompt_.ok(cmd);
    ASSERT_EQ(code(prompt_.ok("task_wait 10000")[1]), StatusCode::kSuccess);
    for (uint32_t l = 0; l < kLayers; ++l) {
      ASSERT_TRUE(decoder.cache_manager()->wait_layer(dst.value(), l, 5000).ok());
    }
    for (size_t t = 0; t < src_.size(); ++t) {
      EXPECT_EQ(fnv1a(reinterpret_cast<const void*>(dst->tensor_addrs[t]), kBytes),
                std::stoull(prompt_.ok("hash " + s(src_[t]) + " " + s(kBytes))[1]));
    }
    EXPECT_TRUE(decoder.cache_manager()->deallocate_cache(dst->cache_id).ok());
  }

  // The hostile client's summary line; fails the test if it did not finish.
  std::string attack(uint64_t seed, long messages, const std::string& extra = "") {
    std::vector<std::string> argv = {
        KVDIST_HOSTILE_CLIENT_PATH,        "127.0.0.1", s(port()), "1", s(seed),
        s(static_cast<uint64_t>(messages))};
    if (!extra.empty()) {
      argv.push_back("--victim");
      argv.push_back(extra);
    }
    std::string out;
    int rc = testing::run_process(argv, 240000, &out);
    EXPECT_EQ(rc, 0) << out;
    return out;
  }

  std::pair<uint64_t, int> prompt_stats() {
    auto r = prompt_.ok("stats");
    return {std::stoull(r[1]), std::stoi(r[2])};
  }

  uint16_t port() const { return static_cast<uint16_t>(port_); }

  PeerProcess prompt_;
  unsigned long port_ = 0;
  int64_t src_id_ = -1;
  std::vector<uint64_t> src_;
};

TEST_F(HostileInputTest, GarbageIsRefusedAndTheListenerServesOn) {
  const long kMessages = testing::kSanitized ? 3000 : 10000;
  DataDist decoder(Role::kDecoder, 2);
  ASSERT_TRUE(decoder.init(Options{}).ok());
  // Warm-up: the paths the attack takes, once, before the figures.
  attack(1, 400, "2");
  legit_transfer(decoder);
  auto [rss0, fds0] = prompt_stats();

  auto start = Clock::now();
  std::string out = attack(20240601, kMessages, "2");
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_GE(field(out, "sent"), kMessages) << out;
  EXPECT_GT(field(out, "nacks"), 0) << out;      // refusals answered
  EXPECT_GT(field(out, "acks"), 0) << out;       // well-formed hellos accepted...
  EXPECT_GT(field(out, "ep_errors"), 0) << out;  // ...and closed on their garbage
  EXPECT_GT(field(out, "oversized"), 0) << out;

  // Alive, and the DECODER that was linked all along is still linked: the
  // hellos that claimed to be it were refused without touching its link.
  ASSERT_NE(prompt_.call("stats"), "");
  EXPECT_TRUE(decoder.check_link_status(1).ok());
  legit_transfer(decoder);
  // A new DECODER links and receives.
  DataDist fresh(Role::kDecoder, 3);
  ASSERT_TRUE(fresh.init(Options{}).ok());
  legit_transfer(fresh);
  fresh.finalize();  // the same links as at the first figures

  // Closed connections are reaped on the PROMPT's progress thread: give
  // them a moment, then compare.
  auto [rss1, fds1] = prompt_stats();
  for (auto end = Clock::now() + std::chrono::seconds(5); fds1 > fds0 && Clock::now() < end;) {
    usleep(100000);
    std::tie(rss1, fds1) = prompt_stats();
  }
  std::printf("[figure] hostile client: %s in %.1f s; PROMPT rss %.1f -> %.1f MiB, fds %d -> %d\n",
              out.substr(0, out.find('\n')).c_str(), secs, rss0 / 1048576.0, rss1 / 1048576.0, fds0,
              fds1);
  EXPECT_LE(fds1, fds0);
  if (!testing::kSanitized) EXPECT_LT(rss1, rss0 + rss0 / 10 + (8u << 20));
}

}  // namespace
}  // namespace kvdist
