// Load: this process is the PROMPT; kvdist_test_peer children are DECODERs.
// 1,000 transfers back to back to one DECODER, and 8 DECODERs served by
// each task at once with mixed sizes. Every byte is compared (hashes of the
// destination against the source), and resident memory and open descriptors
// of the PROMPT and the DECODERs are compared after a warm-up.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "bytes_hash.h"
#include "kvdist/kvdist.h"
#include "peer_process.h"
#include "proc_stats.h"

namespace kvdist {
namespace {

using testing::fill_pattern;
using testing::fnv1a;
using testing::PeerProcess;
using Clock = std::chrono::steady_clock;

constexpr uint64_t kPromptCluster = 1;
constexpr uint32_t kLayers = 4;

using testing::code;
using testing::s;

// The hash the peer's "hashv" answers for these ranges.
uint64_t hashv(const std::vector<uint64_t>& addrs, uint64_t len) {
  uint64_t h = 0;
  for (uint64_t a : addrs) h = h * 31 + fnv1a(reinterpret_cast<const void*>(a), len);
  return h;
}

class GoSynchronizer : public LayerSynchronizer {
 public:
  bool synchronize_layer(uint32_t, std::optional<int32_t>) override { return true; }
};

struct Stats {
  uint64_t rss = 0;
  int fds = 0;
};

struct Decoder {
  explicit Decoder(uint64_t cluster) : cluster(cluster) {}
  void start(uint16_t port) {
    proc.ok("init decoder " + s(cluster));
    auto r = proc.ok("link " + s(kPromptCluster) + " 127.0.0.1 " + s(port) + " 5000");
    ASSERT_EQ(code(r[1]), StatusCode::kSuccess);
  }
  std::pair<int64_t, std::vector<uint64_t>> alloc(uint64_t bytes) {
    auto r = proc.ok("alloc 0 " + s(2 * kLayers) + " 1 " + s(bytes));
    std::vector<uint64_t> addrs;
    for (size_t i = 2; i < r.size(); ++i) addrs.push_back(std::stoull(r[i]));
    return {std::stoll(r[1]), addrs};
  }
  uint64_t hashv(const std::vector<uint64_t>& addrs, uint64_t len) {
    std::string cmd = "hashv " + s(len);
    for (uint64_t a : addrs) cmd += " " + s(a);
    return std::stoull(proc.ok(cmd)[1]);
  }
  Stats stats() {
    auto r = proc.ok("stats");
    return {std::stoull(r[1]), std::stoi(r[2])};
  }
  uint64_t cluster;
  PeerProcess proc;
};

Stats local_stats() { return {testing::rss_bytes(), testing::open_fds()}; }

void expect_flat(const char* who, const Stats& before, const Stats& after) {
  std::printf("[figure] %s: rss %.2f -> %.2f MiB (%+.2f %%), fds %d -> %d\n", who,
              before.rss / 1048576.0, after.rss / 1048576.0,
              100.0 * (static_cast<double>(after.rss) - before.rss) / before.rss, before.fds,
              after.fds);
  EXPECT_LE(after.fds, before.fds) << who;
  // Sanitizer allocators keep freed memory in quarantine: RSS means nothing.
  if (!testing::kSanitized) EXPECT_LT(after.rss, before.rss + before.rss / 20) << who;
}

class LoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    prompt_ = std::make_unique<DataDist>(Role::kPrompt, kPromptCluster);
    Options o;
    o.listen_ip_info = "127.0.0.1:0";
    o.sync_kv_timeout_ms = 5000;
    o.transfer_timeout_ms = 5000;
    ASSERT_TRUE(prompt_->init(o).ok());
  }
  void TearDown() override { prompt_->finalize(); }
  CacheManager& cm() { return *prompt_->cache_manager(); }

  KvCache source(uint64_t bytes) {
    CacheDesc d;
    d.num_tensors = 2 * kLayers;
    d.shape = {1, static_cast<int64_t>(bytes)};
    d.data_type = DataType::kUint8;
    auto c = cm().allocate_cache(d);
    EXPECT_TRUE(c.ok()) << c.status().to_string();
    for (uint32_t t = 0; t < d.num_tensors; ++t) {
      fill_pattern(reinterpret_cast<void*>(c->tensor_addrs[t]), bytes, 300 + t);
    }
    return c.value();
  }
  // Makes transfer i's bytes its own: a fresh pattern at the head of each tensor.
  static void stamp(const KvCache& c, uint64_t i) {
    for (uint64_t a : c.tensor_addrs) fill_pattern(reinterpret_cast<void*>(a), 256, i * 977 + a);
  }

  std::unique_ptr<DataDist> prompt_;
};

TEST_F(LoadTest, ThousandTransfersBackToBack) {
  const int kTransfers = testing::kSanitized ? 200 : 1000;
  const int kWarmup = kTransfers / 10;
  const std::vector<uint64_t> sizes = {4096, 65536, 262144};
  Decoder d(2);
  d.start(prompt_->listen_port());
  std::vector<KvCache> srcs;
  std::vector<std::pair<int64_t, std::vector<uint64_t>>> dsts;
  for (uint64_t b : sizes) {
    srcs.push_back(source(b));
    dsts.push_back(d.alloc(b));
  }
  auto sync = std::make_shared<GoSynchronizer>();
  Stats prompt0;
  Stats decoder0;
  uint64_t bytes = 0;
  auto start = Clock::now();
  Clock::time_point measured;
  for (int i = 0; i < kTransfers; ++i) {
    if (i == kWarmup) {
      prompt0 = local_stats();
      decoder0 = d.stats();
      measured = Clock::now();
    }
    size_t k = static_cast<size_t>(i) % sizes.size();
    stamp(srcs[k], static_cast<uint64_t>(i));
    TransferConfig cfg{2, dsts[k].second, std::nullopt, 0};
    auto task = cm().transfer_cache_async(srcs[k], sync, {cfg});
    ASSERT_TRUE(task.ok()) << i << ": " << task.status().to_string();
    ASSERT_EQ(task->synchronize(), StatusCode::kSuccess) << i << ": " << task->result_message(0);
    // The DECODER saw the last layer arrive, then readies the cache for reuse.
    ASSERT_EQ(code(d.proc.ok("wait " + s(static_cast<uint64_t>(dsts[k].first)) + " " +
                             s(kLayers - 1) + " 5000")[1]),
              StatusCode::kSuccess)
        << i;
    d.proc.ok("reset " + s(static_cast<uint64_t>(dsts[k].first)) + " 0 0");
    ASSERT_EQ(d.hashv(dsts[k].second, sizes[k]), hashv(srcs[k].tensor_addrs, sizes[k])) << i;
    bytes += 2 * kLayers * sizes[k];
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  double steady = std::chrono::duration<double>(Clock::now() - measured).count();
  std::printf(
      "[figure] %d transfers back to back, %.1f MiB, every byte compared, in %.1f s "
      "(%.2f ms each after warm-up)\n",
      kTransfers, bytes / 1048576.0, secs, 1000.0 * steady / (kTransfers - kWarmup));
  expect_flat("1000 transfers, PROMPT", prompt0, local_stats());
  expect_flat("1000 transfers, DECODER", decoder0, d.stats());
}

TEST_F(LoadTest, EightDecodersServedAtOnceWithMixedSizes) {
  const int kRounds = testing::kSanitized ? 20 : 200;
  const int kWarmup = 5;
  const std::vector<uint64_t> sizes = {2048, 32768, 131072, 524288};
  std::vector<std::unique_ptr<Decoder>> decoders;
  for (uint64_t c = 0; c < 8; ++c) decoders.push_back(std::make_unique<Decoder>(10 + c));
  for (auto& d : decoders) d->start(prompt_->listen_port());
  std::vector<KvCache> srcs;
  // dsts[decoder][size]
  std::vector<std::vector<std::pair<int64_t, std::vector<uint64_t>>>> dsts(decoders.size());
  for (uint64_t b : sizes) srcs.push_back(source(b));
  for (size_t k = 0; k < decoders.size(); ++k) {
    for (uint64_t b : sizes) dsts[k].push_back(decoders[k]->alloc(b));
  }
  auto sync = std::make_shared<GoSynchronizer>();
  Stats prompt0;
  std::vector<Stats> decoder0(decoders.size());
  uint64_t bytes = 0;
  auto start = Clock::now();
  for (int r = 0; r < kRounds; ++r) {
    if (r == kWarmup) {
      prompt0 = local_stats();
      for (size_t k = 0; k < decoders.size(); ++k) decoder0[k] = decoders[k]->stats();
    }
    size_t z = static_cast<size_t>(r) % sizes.size();
    stamp(srcs[z], static_cast<uint64_t>(r));
    // Decoder k takes layers [0, n_k): mixed amounts in every round.
    std::vector<TransferConfig> cfgs;
    std::vector<uint32_t> counts;
    for (size_t k = 0; k < decoders.size(); ++k) {
      uint32_t n = 1 + static_cast<uint32_t>((k + static_cast<size_t>(r)) % kLayers);
      counts.push_back(n);
      std::vector<uint64_t> addrs(dsts[k][z].second.begin(), dsts[k][z].second.begin() + 2 * n);
      cfgs.push_back(TransferConfig{decoders[k]->cluster, addrs, LayerRange{0, n}, 0});
      bytes += 2 * n * sizes[z];
    }
    auto task = cm().transfer_cache_async(srcs[z], sync, cfgs);
    ASSERT_TRUE(task.ok()) << r << ": " << task.status().to_string();
    ASSERT_EQ(task->synchronize(), StatusCode::kSuccess) << r;
    for (auto res : task->get_results()) EXPECT_EQ(res, StatusCode::kSuccess) << r;
    for (size_t k = 0; k < decoders.size(); ++k) {
      uint32_t n = counts[k];
      std::vector<uint64_t> got(dsts[k][z].second.begin(), dsts[k][z].second.begin() + 2 * n);
      std::vector<uint64_t> want(srcs[z].tensor_addrs.begin(),
                                 srcs[z].tensor_addrs.begin() + 2 * n);
      ASSERT_EQ(decoders[k]->hashv(got, sizes[z]), hashv(want, sizes[z]))
          << "round " << r << " decoder " << k;
    }
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  std::printf(
      "[figure] 8 DECODERs x %d rounds (mixed sizes and layer counts), %.1f MiB, every "
      "byte compared, in %.1f s\n",
      kRounds, bytes / 1048576.0, secs);
  expect_flat("8 decoders, PROMPT", prompt0, local_stats());
  Stats worst_before = decoder0[0];
  Stats worst_after = decoders[0]->stats();
  for (size_t k = 0; k < decoders.size(); ++k) {
    Stats after = decoders[k]->stats();
    EXPECT_LE(after.fds, decoder0[k].fds) << k;
    if (!testing::kSanitized) EXPECT_LT(after.rss, decoder0[k].rss + decoder0[k].rss / 20) << k;
    auto grown = [](const Stats& a, const Stats& b) {
      return static_cast<int64_t>(b.rss) - static_cast<int64_t>(a.rss);
    };
    if (grown(decoder0[k], after) > grown(worst_before, worst_after)) {
      worst_before = decoder0[k];
      worst_after = after;
    }
  }
  expect_flat("8 decoders, most grown DECODER", worst_before, worst_after);
}

}  // namespace
}  // namespace kvdist
