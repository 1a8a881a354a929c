// Hosts apart: the PROMPT and its DECODERs in separate network namespaces
// of this machine (testing::NetnsStar: veth pairs into a bridge), each a
// kvdist_test_peer child on the network path (KVDIST_NETWORK_PATH=1: no
// shared memory, no cross-process copies; UCX over the veth only). Bytes
// compared; a pushed cache, authentication, and one PROMPT serving sixteen
// DECODERs at once, four of them killed mid-push, then 200 rounds with
// memory and descriptors flat.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kvdist/kvdist.h"
#include "netns.h"
#include "peer_process.h"
#include "proc_stats.h"

namespace kvdist {
namespace {

using testing::code;
using testing::join;
using testing::NetnsStar;
using testing::PeerProcess;
using testing::remote_alloc;
using testing::remote_hash;
using testing::RemoteCache;
using testing::s;
using Clock = std::chrono::steady_clock;
using Env = std::map<std::string, std::string>;

constexpr uint8_t kCanary = 0xA5;

Env with(Env env, const std::string& key, const std::string& value) {
  env[key] = value;
  return env;
}

// One host's peer: a kvdist_test_peer child in a namespace of the star.
struct Host {
  Host(const Env& env, const std::string& ns) : proc(env, NetnsStar::in(ns)) {}
  PeerProcess proc;
  uint64_t cluster = 0;
  RemoteCache dst;
};

// A PROMPT in the hub with a patterned source cache of `tensors` x `bytes`.
class Prompt {
 public:
  Prompt(const NetnsStar& net, uint32_t tensors, uint64_t bytes, const Env& extra = {})
      : proc_(merged(net.hub_env(), extra), NetnsStar::in(net.hub())), bytes_(bytes) {
    port_ = proc_.ok("init prompt 1 " + NetnsStar::hub_ip() + ":0 5000", 20000).at(1);
    src_ = remote_alloc(proc_, tensors, bytes);
    for (size_t t = 0; t < src_.addrs.size(); ++t) {
      proc_.ok("pattern " + s(src_.addrs[t]) + " " + s(bytes) + " " + s(11 + t));
      hashes_.push_back(remote_hash(proc_, src_.addrs[t], bytes));
    }
  }
  PeerProcess& proc() { return proc_; }
  std::string link_command() const { return "link 1 " + NetnsStar::hub_ip() + " " + port_; }
  uint64_t source_id() const { return static_cast<uint64_t>(src_.id); }
  uint64_t hash(size_t t) const { return hashes_.at(t); }
  size_t tensors() const { return src_.addrs.size(); }
  uint64_t bytes() const { return bytes_; }

 private:
  static Env merged(Env a, const Env& b) {
    for (const auto& [k, v] : b) a[k] = v;
    return a;
  }
  PeerProcess proc_;
  std::string port_;
  RemoteCache src_;
  std::vector<uint64_t> hashes_;
  uint64_t bytes_;
};

// Starts a DECODER in spoke i, links it to the PROMPT, gives it a canary-
// filled destination like the source.
std::unique_ptr<Host> decoder(const NetnsStar& net, int i, Prompt& prompt, const Env& extra = {}) {
  Env env = net.spoke_env(i);
  for (const auto& [k, v] : extra) env[k] = v;
  auto h = std::make_unique<Host>(env, net.spoke(i));
  h->cluster = 10 + static_cast<uint64_t>(i);
  h->proc.ok("init decoder " + s(h->cluster) + " - 5000", 20000);
  auto r = h->proc.ok(prompt.link_command() + " 5000", 10000);
  EXPECT_EQ(code(r.at(1)), StatusCode::kSuccess) << "decoder " << i;
  h->dst = remote_alloc(h->proc, static_cast<uint32_t>(prompt.tensors()), prompt.bytes());
  for (uint64_t a : h->dst.addrs) {
    h->proc.ok("fill " + s(a) + " " + s(prompt.bytes()) + " " + s(kCanary));
  }
  return h;
}

std::string destination(const Host& h) {
  std::string out = s(h.cluster) + "=";
  for (size_t i = 0; i < h.dst.addrs.size(); ++i) out += (i ? "," : "") + s(h.dst.addrs[i]);
  return out;
}

void expect_bytes(Host& h, const Prompt& prompt) {
  // Read after wait_layer, as a DECODER does (and as TSan needs: the bytes
  // were placed by this process's progress thread).
  for (size_t l = 0; l < h.dst.addrs.size() / 2; ++l) {
    h.proc.ok("wait " + s(static_cast<uint64_t>(h.dst.id)) + " " + s(l) + " 10000", 15000);
  }
  for (size_t t = 0; t < h.dst.addrs.size(); ++t) {
    EXPECT_EQ(remote_hash(h.proc, h.dst.addrs[t], prompt.bytes()), prompt.hash(t))
        << "cluster " << h.cluster << " tensor " << t;
  }
}

#define SKIP_WITHOUT(net) \
  if (!(net).unavailable().empty()) GTEST_SKIP() << (net).unavailable()

TEST(TwoHostsTest, PushOverTheNetworkPathEveryByte) {
  NetnsStar net(1);
  SKIP_WITHOUT(net);
  const uint64_t kBytes = testing::kSanitized ? 65536 : 1 << 20;
  Prompt prompt(net, 8, kBytes);
  auto d = decoder(net, 0, prompt);
  prompt.proc().ok("pushn " + s(prompt.source_id()) + " 0 " + destination(*d));
  auto r = prompt.proc().ok("task_wait 30000", 40000);
  ASSERT_EQ(code(r.at(1)), StatusCode::kSuccess) << prompt.proc().call("task_message 0");
  expect_bytes(*d, prompt);
}

TEST(TwoHostsTest, AuthenticatedLinksAcrossHosts) {
  NetnsStar net(3);
  SKIP_WITHOUT(net);
  const std::string secret = "two-hosts-secret-0b8e";
  Prompt prompt(net, 4, 65536, {{"KVDIST_AUTH_SECRET", secret}});
  // The right secret: linked, and the bytes arrive.
  auto good = decoder(net, 0, prompt, {{"KVDIST_AUTH_SECRET", secret}});
  prompt.proc().ok("pushn " + s(prompt.source_id()) + " 0 " + destination(*good));
  ASSERT_EQ(code(prompt.proc().ok("task_wait 30000", 40000).at(1)), StatusCode::kSuccess);
  expect_bytes(*good, prompt);
  // A wrong one, and none: refused, and said why.
  struct Case {
    int spoke;
    const char* secret;
    const char* says;
  };
  for (const Case& c :
       {Case{1, "wrong-secret", "authentication failed"}, Case{2, "", "authentication required"}}) {
    PeerProcess p(with(net.spoke_env(c.spoke), "KVDIST_AUTH_SECRET", c.secret),
                  NetnsStar::in(net.spoke(c.spoke)));
    p.ok("init decoder " + s(20 + c.spoke) + " - 5000", 20000);
    std::string line = p.call(prompt.link_command() + " 5000", 10000);
    EXPECT_EQ(line.rfind("ok " + s(static_cast<uint64_t>(StatusCode::kLinkFailed)), 0), 0u) << line;
    EXPECT_NE(line.find(c.says), std::string::npos) << line;
  }
}

TEST(TwoHostsTest, PromptKilledMidLayerTheDecoderGetsItsMemoryBack) {
  // Killed while its large layers are being received in place (rendezvous
  // on the active-message path): the DECODER's receives end with the link,
  // and the memory it then frees comes back; the DECODER serves on.
  NetnsStar net(1);
  SKIP_WITHOUT(net);
  const uint64_t kBytes = testing::kSanitized ? 4u << 20 : 16u << 20;
  auto prompt = std::make_unique<Prompt>(net, 8, kBytes);
  auto d = decoder(net, 0, *prompt);
  prompt->proc().ok("pushn " + s(prompt->source_id()) + " 0 " + destination(*d));
  std::this_thread::sleep_for(std::chrono::milliseconds(testing::kSanitized ? 50 : 10));
  prompt->proc().kill_now();
  auto killed = Clock::now();
  // Layers that did not arrive fail their waits at once.
  StatusCode last = d->proc.call("wait " + s(static_cast<uint64_t>(d->dst.id)) + " 3 10000", 15000)
                                .find("ok " + s(0)) == 0
                        ? StatusCode::kSuccess
                        : StatusCode::kLinkFailed;
  d->proc.ok("free " + s(static_cast<uint64_t>(d->dst.id)));
  uint64_t used = 1;
  while (Clock::now() - killed < std::chrono::seconds(10) &&
         (used = std::stoull(d->proc.ok("pool_used").at(1))) != 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  int64_t ms = std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - killed).count();
  EXPECT_EQ(used, 0u);
  std::printf(
      "[figure] PROMPT killed mid-layer over veth: last layer %s; freed memory back %lld ms "
      "after the kill\n",
      last == StatusCode::kSuccess ? "had arrived" : "failed", static_cast<long long>(ms));
  // A restarted PROMPT pushes into a new cache of the same DECODER.
  prompt.reset();
  Prompt again(net, 8, kBytes);
  RemoteCache dst = remote_alloc(d->proc, 8, kBytes);
  d->dst = dst;
  ASSERT_EQ(code(d->proc.ok(again.link_command() + " 5000", 10000).at(1)), StatusCode::kSuccess);
  again.proc().ok("pushn " + s(again.source_id()) + " 0 " + destination(*d));
  ASSERT_EQ(code(again.proc().ok("task_wait 30000", 40000).at(1)), StatusCode::kSuccess);
  expect_bytes(*d, again);
}

TEST(SixteenDecodersTest, KillFourMidPushOnlyTheirConfigsFailThenRoundsStayFlat) {
  constexpr int kDecoders = 16;
  constexpr int kKilled = 4;
  const int kRounds = testing::kSanitized ? 40 : 200;
  const uint64_t kBytes = testing::kSanitized ? 16384 : 65536;
  NetnsStar net(kDecoders);
  SKIP_WITHOUT(net);
  Prompt prompt(net, 8, kBytes);  // 4 layers of K and V
  std::vector<std::unique_ptr<Host>> ds;
  for (int i = 0; i < kDecoders; ++i) ds.push_back(decoder(net, i, prompt));
  auto push_to = [&](const std::vector<Host*>& to, bool gated) {
    std::string cmd = "pushn " + s(prompt.source_id()) + (gated ? " 1" : " 0");
    for (Host* h : to) cmd += " " + destination(*h);
    prompt.proc().ok(cmd);
  };
  std::vector<Host*> all;
  for (auto& d : ds) all.push_back(d.get());

  // All sixteen at once.
  push_to(all, false);
  auto r = prompt.proc().ok("task_wait 60000", 70000);
  ASSERT_EQ(code(r.at(1)), StatusCode::kSuccess);
  for (Host* h : all) expect_bytes(*h, prompt);

  // Mid-push, four die: layer 0 has landed everywhere, the rest is gated.
  for (Host* h : all) {
    for (uint64_t a : h->dst.addrs) h->proc.ok("fill " + s(a) + " " + s(kBytes) + " " + s(kCanary));
    h->proc.ok("reset " + s(static_cast<uint64_t>(h->dst.id)));
  }
  push_to(all, true);
  prompt.proc().ok("release 0");
  for (Host* h : all) {
    ASSERT_EQ(
        code(h->proc.ok("wait " + s(static_cast<uint64_t>(h->dst.id)) + " 0 10000", 15000)[1]),
        StatusCode::kSuccess);
  }
  for (int k = 0; k < kKilled; ++k) ds[static_cast<size_t>(3 * k + 1)]->proc.kill_now();
  prompt.proc().ok("release all");
  r = prompt.proc().ok("task_wait 60000", 70000);
  ASSERT_EQ(r.size(), 2u + kDecoders);
  std::vector<Host*> alive;
  for (int i = 0; i < kDecoders; ++i) {
    bool killed = i % 3 == 1 && i < 3 * kKilled;
    StatusCode result = code(r[2 + static_cast<size_t>(i)]);
    if (killed) {
      EXPECT_NE(result, StatusCode::kSuccess) << "killed decoder " << i;
    } else {
      EXPECT_EQ(result, StatusCode::kSuccess) << "decoder " << i << ": " << r[2 + i];
      alive.push_back(ds[static_cast<size_t>(i)].get());
    }
  }
  ASSERT_EQ(alive.size(), static_cast<size_t>(kDecoders - kKilled));
  for (Host* h : alive) expect_bytes(*h, prompt);

  // Rounds to the twelve: every task succeeds, memory and fds stay flat.
  auto stats = [](PeerProcess& p) {
    auto st = p.ok("stats");
    return std::pair<uint64_t, int>(std::stoull(st[1]), std::stoi(st[2]));
  };
  std::pair<uint64_t, int> p0, d0;
  auto start = Clock::now();
  for (int round = 0; round < kRounds; ++round) {
    if (round == kRounds / 10) {
      p0 = stats(prompt.proc());
      d0 = stats(alive[0]->proc);
    }
    push_to(alive, false);
    auto w = prompt.proc().ok("task_wait 30000", 40000);
    ASSERT_EQ(code(w.at(1)), StatusCode::kSuccess) << "round " << round;
    if (round % 50 == 49) {
      for (Host* h : alive) expect_bytes(*h, prompt);
    }
  }
  double secs = std::chrono::duration<double>(Clock::now() - start).count();
  auto p1 = stats(prompt.proc());
  auto d1 = stats(alive[0]->proc);
  std::printf(
      "[figure] 16 decoders over veth: %d rounds to %zu decoders (%.1f MiB each round) in %.1f s; "
      "PROMPT rss %.1f -> %.1f MiB, fds %d -> %d; a DECODER rss %.1f -> %.1f MiB, fds %d -> %d\n",
      kRounds, alive.size(), alive.size() * prompt.tensors() * kBytes / 1048576.0, secs,
      p0.first / 1048576.0, p1.first / 1048576.0, p0.second, p1.second, d0.first / 1048576.0,
      d1.first / 1048576.0, d0.second, d1.second);
  EXPECT_LE(p1.second, p0.second);
  EXPECT_LE(d1.second, d0.second);
  if (!testing::kSanitized) {
    EXPECT_LT(p1.first, p0.first + p0.first / 10 + (8u << 20));
    EXPECT_LT(d1.first, d0.first + d0.first / 10 + (8u << 20));
  }
}

}  // namespace
}  // namespace kvdist
