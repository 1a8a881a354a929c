// Hosts for tests on one machine: network namespaces joined by veth pairs,
// created by the test and deleted with this guard (even when the test
// fails). A hub namespace holds a bridge at 10.213.0.1/24; spoke i is a
// namespace with a veth into the bridge at 10.213.0.(10 + i). Stars of
// concurrent tests do not meet: each lives in its own namespaces. Names
// carry the pid; namespaces of dead test processes are deleted on the way.
#ifndef KVDIST_TESTS_SUPPORT_NETNS_H_
#define KVDIST_TESTS_SUPPORT_NETNS_H_

#include <map>
#include <string>
#include <vector>

namespace kvdist::testing {

class NetnsStar {
 public:
  explicit NetnsStar(int spokes);
  ~NetnsStar();
  NetnsStar(const NetnsStar&) = delete;
  NetnsStar& operator=(const NetnsStar&) = delete;

  // Empty when the star is up; otherwise why not (not root, no `ip`, ...):
  // tests skip with it.
  const std::string& unavailable() const { return unavailable_; }

  const std::string& hub() const { return hub_; }
  const std::string& spoke(int i) const { return spokes_.at(i); }
  static std::string hub_ip() { return "10.213.0.1"; }
  static std::string spoke_ip(int i) { return "10.213.0." + std::to_string(10 + i); }

  // The command prefix that runs a process inside a namespace.
  static std::vector<std::string> in(const std::string& ns) { return {"ip", "netns", "exec", ns}; }
  // UCX settings for a process in the hub or in spoke i: its own device,
  // and the network path (kvdist shares no memory across namespaces).
  std::map<std::string, std::string> hub_env() const;
  std::map<std::string, std::string> spoke_env(int i) const;

  // Takes spoke i's link down at the hub (a cable pulled); 0 on success.
  int cut(int i);

 private:
  std::string bridge_;
  std::string hub_;
  std::vector<std::string> spokes_;
  std::vector<std::string> hub_ends_;    // veth ends in the hub, on the bridge
  std::vector<std::string> spoke_ends_;  // veth ends in the spokes
  std::string unavailable_;
};

// Runs a command line (words split on spaces); its exit status.
int sh(const std::string& cmd);

}  // namespace kvdist::testing

#endif  // KVDIST_TESTS_SUPPORT_NETNS_H_
