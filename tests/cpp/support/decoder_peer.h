// A kvdist_test_peer child as a DECODER linked to a PROMPT over loopback,
// with the commands the transfer and pull tests use.
#ifndef KVDIST_TESTS_SUPPORT_DECODER_PEER_H_
#define KVDIST_TESTS_SUPPORT_DECODER_PEER_H_

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "kvdist/status.h"
#include "peer_process.h"

namespace kvdist::testing {

class DecoderPeer {
 public:
  DecoderPeer(uint64_t cluster, uint64_t prompt_cluster, uint16_t prompt_port,
              const std::map<std::string, std::string>& env = {})
      : proc_(env), cluster_(cluster) {
    proc_.ok("init decoder " + s(cluster));
    auto r = proc_.ok("link " + s(prompt_cluster) + " 127.0.0.1 " + s(prompt_port) + " 3000");
    if (code(r[1]) != StatusCode::kSuccess) throw std::runtime_error("link failed: " + r[1]);
  }
  uint64_t cluster() const { return cluster_; }
  PeerProcess& proc() { return proc_; }

  RemoteCache alloc(bool blocks, uint32_t num_tensors, const std::vector<int64_t>& dims) {
    std::string cmd = "alloc " + s(blocks ? 1 : 0) + " " + s(num_tensors);
    for (int64_t d : dims) cmd += " " + s(static_cast<uint64_t>(d));
    auto r = proc_.ok(cmd);
    RemoteCache c;
    c.id = std::stoll(r[1]);
    for (size_t i = 2; i < r.size(); ++i) c.addrs.push_back(std::stoull(r[i]));
    return c;
  }
  void fill(uint64_t addr, uint64_t len, uint8_t byte) {
    proc_.ok("fill " + s(addr) + " " + s(len) + " " + s(byte));
  }
  uint64_t hash(uint64_t addr, uint64_t len) {
    return std::stoull(proc_.ok("hash " + s(addr) + " " + s(len))[1]);
  }
  // "pull <dst> <cluster> <key> <opts>": the code, and the answer's words.
  StatusCode pull(int64_t dst, uint64_t cluster, const std::string& key,
                  const std::string& opts = "", std::string* why = nullptr) {
    std::string answer = proc_.call(
        "pull " + s(static_cast<uint64_t>(dst)) + " " + s(cluster) + " " + key + " " + opts, 30000);
    if (answer.rfind("ok ", 0) != 0) throw std::runtime_error("pull answered '" + answer + "'");
    if (why != nullptr) *why = answer;
    return code(answer.substr(3, answer.find(' ', 3) - 3));
  }
  StatusCode wait(int64_t cache, uint32_t layer, int timeout_ms) {
    return code(
        proc_.ok("wait " + s(cache) + " " + s(layer) + " " + s(timeout_ms), timeout_ms + 5000)[1]);
  }

 private:
  PeerProcess proc_;
  uint64_t cluster_;
};

}  // namespace kvdist::testing

#endif  // KVDIST_TESTS_SUPPORT_DECODER_PEER_H_
