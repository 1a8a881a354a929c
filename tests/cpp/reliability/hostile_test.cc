// Hostile input at a PROMPT's listener: kvdist_hostile_client (raw UCX,
// seeded) sends ≥ 10,000 malformed, truncated, oversized and random
// handshake and control messages across hundreds of connections, claims a
// linked DECODER's cluster id, speaks wrong protocol versions. The PROMPT
// (a kvdist_test_peer child) must live on, refuse or close those
// connections, keep its legitimate link, serve a new DECODER with every
// byte right, and hold no more memory or descriptors than before.
//
// With a shared secret (kvdist.AuthSecret / KVDIST_AUTH_SECRET) the same
// listener must link no client that cannot prove it: wrong, missing,
// empty or replayed proofs are refused, said so to the client, and logged.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
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
using Env = std::map<std::string, std::string>;

// The value of name=<n> in the client's summary (a whole word: "acks" is
// not the tail of "nacks").
long field(const std::string& out, const std::string& name) {
  for (size_t at = out.find(name + "="); at != std::string::npos;
       at = out.find(name + "=", at + 1)) {
    if (at == 0 || out[at - 1] == ' ') return std::atol(out.c_str() + at + name.size() + 1);
  }
  return -1;
}

class HostileInputTest : public ::testing::Test {
 protected:
  explicit HostileInputTest(const std::map<std::string, std::string>& env = {}) : prompt_(env) {}

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
  std::string attack(uint64_t seed, long messages, const std::string& victim = "",
                     const std::string& secret = "") {
    std::vector<std::string> argv = {
        KVDIST_HOSTILE_CLIENT_PATH,        "127.0.0.1", s(port()), "1", s(seed),
        s(static_cast<uint64_t>(messages))};
    if (!victim.empty()) {
      argv.push_back("--victim");
      argv.push_back(victim);
    }
    if (!secret.empty()) {
      argv.push_back("--secret");
      argv.push_back(secret);
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

// The PROMPT child holds a secret; its log goes to a file the tests read.
class AuthTest : public HostileInputTest {
 protected:
  static constexpr const char* kSecret = "kvdist-test-secret-7f3a9c";
  AuthTest()
      : HostileInputTest({{"KVDIST_AUTH_SECRET", kSecret}, {"KVDIST_TEST_STDERR", log_path()}}) {}

  static std::string log_path() {
    return "/tmp/kvdist_auth_test_" + std::to_string(getpid()) + ".log";
  }
  static std::string prompt_log() {
    std::ifstream in(log_path());
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  void TearDown() override { std::remove(log_path().c_str()); }

  // Links a DECODER holding `secret` ("" = none); the link's result.
  static std::pair<StatusCode, std::string> link_with(DataDist& decoder, uint16_t port) {
    LinkResult r = decoder.link_clusters({ClusterInfo{1, "127.0.0.1", port}}, 3000);
    return {r.per_cluster.at(0), r.messages.at(0)};
  }
  static Options with_secret(const std::string& secret) {
    Options o;
    o.auth_secret = secret;
    return o;
  }
};

TEST_F(AuthTest, SameSecretLinksAndEveryByteArrives) {
  DataDist decoder(Role::kDecoder, 2);
  ASSERT_TRUE(decoder.init(with_secret(kSecret)).ok());
  auto [code, why] = link_with(decoder, port());
  ASSERT_EQ(code, StatusCode::kSuccess) << why;
  legit_transfer(decoder);
}

TEST_F(AuthTest, WrongOrMissingSecretIsRefusedSaidAndLogged) {
  struct Case {
    const char* secret;
    const char* client_says;
    const char* log_says;
  };
  const Case cases[] = {
      // The client checks the listener's proof too, but the listener
      // checks first: it refuses and logs before it answers with its own.
      {"another-secret", "authentication failed", "authentication failed"},
      {"", "authentication required", "authentication required"},
  };
  uint64_t cluster = 2;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.secret);
    DataDist decoder(Role::kDecoder, cluster++);
    ASSERT_TRUE(decoder.init(with_secret(c.secret)).ok());
    auto [code, why] = link_with(decoder, port());
    EXPECT_EQ(code, StatusCode::kLinkFailed);
    EXPECT_NE(why.find(c.client_says), std::string::npos) << why;
    EXPECT_FALSE(decoder.check_link_status(1).ok());
    std::string log = prompt_log();
    EXPECT_NE(log.find(c.log_says), std::string::npos) << log;
    EXPECT_NE(log.find("claims cluster " + s(decoder.cluster_id())), std::string::npos) << log;
  }
  // Refused clients leave nothing behind: a DECODER with the secret links.
  DataDist good(Role::kDecoder, 9);
  ASSERT_TRUE(good.init(with_secret(kSecret)).ok());
  ASSERT_EQ(link_with(good, port()).first, StatusCode::kSuccess);
  legit_transfer(good);
}

TEST_F(AuthTest, ClientWithSecretRefusesListenerWithout) {
  PeerProcess open_prompt(Env{{"KVDIST_AUTH_SECRET", ""}});
  auto p = static_cast<uint16_t>(std::stoul(open_prompt.ok("init prompt 1 127.0.0.1:0")[1]));
  DataDist decoder(Role::kDecoder, 2);
  ASSERT_TRUE(decoder.init(with_secret(kSecret)).ok());
  auto [code, why] = link_with(decoder, p);
  EXPECT_EQ(code, StatusCode::kLinkFailed);
  EXPECT_NE(why.find("authentication impossible"), std::string::npos) << why;
}

TEST_F(AuthTest, ForgedProofsNeverLinkAndTheListenerServesOn) {
  const long kMessages = testing::kSanitized ? 1500 : 4000;
  DataDist decoder(Role::kDecoder, 2);
  ASSERT_TRUE(decoder.init(with_secret(kSecret)).ok());
  ASSERT_EQ(link_with(decoder, port()).first, StatusCode::kSuccess);
  // The client can pass the handshake when it knows the secret (so the
  // attack below is refused for its proofs, not for its form)...
  std::string knowing = attack(7, 300, "", kSecret);
  EXPECT_GT(field(knowing, "acks"), 0) << knowing;
  auto [rss0, fds0] = prompt_stats();
  // ...and never without it: random, empty and replayed proofs, claims to
  // hold no secret, garbage, the linked DECODER's cluster id.
  std::string out = attack(20261130, kMessages, "2");
  EXPECT_EQ(field(out, "acks"), 0) << out;
  EXPECT_GT(field(out, "nacks"), 0) << out;
  EXPECT_NE(prompt_log().find("authentication"), std::string::npos);
  EXPECT_TRUE(decoder.check_link_status(1).ok());
  legit_transfer(decoder);
  auto [rss1, fds1] = prompt_stats();
  for (auto end = Clock::now() + std::chrono::seconds(5); fds1 > fds0 && Clock::now() < end;) {
    usleep(100000);
    std::tie(rss1, fds1) = prompt_stats();
  }
  std::printf("[figure] forged proofs: %s; PROMPT fds %d -> %d\n",
              out.substr(0, out.find('\n')).c_str(), fds0, fds1);
  EXPECT_LE(fds1, fds0);
}

TEST(ListenerWarningTest, AnyAddressWithoutSecretWarnsOnce) {
  std::string log = "/tmp/kvdist_warn_test_" + std::to_string(getpid()) + ".log";
  {
    PeerProcess prompt(Env{{"KVDIST_AUTH_SECRET", ""}, {"KVDIST_TEST_STDERR", log}});
    prompt.ok("init prompt 1 0.0.0.0:0");
  }
  {
    PeerProcess loopback(Env{{"KVDIST_AUTH_SECRET", ""}, {"KVDIST_TEST_STDERR", log + ".lo"}});
    loopback.ok("init prompt 1 127.0.0.1:0");
  }
  auto read = [](const std::string& path) {
    std::ifstream in(path);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  };
  std::string any = read(log);
  std::string lo = read(log + ".lo");
  std::remove(log.c_str());
  std::remove((log + ".lo").c_str());
  size_t at = any.find("without a shared secret");
  EXPECT_NE(at, std::string::npos) << any;
  EXPECT_EQ(any.find("without a shared secret", at + 1), std::string::npos) << any;
  EXPECT_EQ(lo.find("without a shared secret"), std::string::npos) << lo;
}

}  // namespace
}  // namespace kvdist
