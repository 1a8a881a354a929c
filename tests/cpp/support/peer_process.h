// A kvdist_test_peer child process, driven from a test over pipes. Every
// call has a deadline; the destructor kills the child if it still runs.
#ifndef KVDIST_TESTS_SUPPORT_PEER_PROCESS_H_
#define KVDIST_TESTS_SUPPORT_PEER_PROCESS_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "kvdist/status.h"

namespace kvdist::testing {

// Words of the peer's line protocol.
inline std::string s(uint64_t v) { return std::to_string(v); }
inline StatusCode code(const std::string& word) {
  return static_cast<StatusCode>(std::stoll(word));
}

class PeerProcess {
 public:
  // Starts the peer binary with extra environment entries ("UCX_TLS=tcp"),
  // behind an optional command prefix ({"ip", "netns", "exec", "ns1"}).
  explicit PeerProcess(const std::map<std::string, std::string>& env = {},
                       const std::vector<std::string>& prefix = {});
  ~PeerProcess();
  PeerProcess(const PeerProcess&) = delete;
  PeerProcess& operator=(const PeerProcess&) = delete;

  // Sends one command line, returns the answer line ("" on timeout/EOF).
  std::string call(const std::string& command, int timeout_ms = 10000);
  // call() in two halves, for a command that runs while the test drives
  // other peers: post() sends it, answer() waits for its line.
  bool post(const std::string& command);
  std::string answer(int timeout_ms = 10000);
  // The answer split into words, after checking it starts with "ok".
  std::vector<std::string> ok(const std::string& command, int timeout_ms = 10000);

  void kill_now();  // SIGKILL and reap
  // Waits for the child to exit by itself (after "quit"): its wait status,
  // or -1 if it still runs after timeout_ms.
  int wait_exit(int timeout_ms);
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  int to_child_ = -1;
  int from_child_ = -1;
  std::string buffer_;
};

// A cache allocated in a peer: its id and its tensors' addresses there.
struct RemoteCache {
  int64_t id = -1;
  std::vector<uint64_t> addrs;
};
// "alloc 0 <tensors> 1 <bytes>": a contiguous uint8 cache in the peer's pool.
RemoteCache remote_alloc(PeerProcess& p, uint32_t tensors, uint64_t bytes);
// The peer's fnv1a of [addr, addr + len).
uint64_t remote_hash(PeerProcess& p, uint64_t addr, uint64_t len);
// " a b c": numbers as words of a command line.
std::string join(const std::vector<uint64_t>& v);

// Where the peer binary lives (set by CMake).
const char* peer_binary();

// Runs argv[0] (searched in PATH) with its output captured in *output (if
// given); kills it after timeout_ms. Its exit status, or -1 if it did not
// exit normally (killed, timed out, not started).
int run_process(const std::vector<std::string>& argv, int timeout_ms,
                std::string* output = nullptr);

}  // namespace kvdist::testing

#endif  // KVDIST_TESTS_SUPPORT_PEER_PROCESS_H_
