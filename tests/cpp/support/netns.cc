#include "netns.h"

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <thread>

#include "peer_process.h"

namespace kvdist::testing {
namespace {

using Clock = std::chrono::steady_clock;

// A veth reports its carrier a moment after both ends are up; UCX does not
// list a device without it.
bool carrier(const std::string& ns, const std::string& dev) {
  auto end = Clock::now() + std::chrono::seconds(5);
  while (Clock::now() < end) {
    std::string out;
    run_process({"ip", "-n", ns, "link", "show", "dev", dev}, 5000, &out);
    if (out.find("state UP") != std::string::npos) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

void reap_stale() {
  std::string list;
  run_process({"ip", "netns", "list"}, 10000, &list);
  std::istringstream in(list);
  std::string line;
  while (std::getline(in, line)) {
    std::string name = line.substr(0, line.find(' '));
    if (name.rfind("kvdist_", 0) != 0) continue;
    // kvdist_<pid>_<role>
    pid_t pid = static_cast<pid_t>(std::atol(name.c_str() + 7));
    if (pid > 0 && kill(pid, 0) != 0) sh("ip netns del " + name);
  }
}

}  // namespace

int sh(const std::string& cmd) {
  std::vector<std::string> argv;
  std::istringstream in(cmd);
  std::string w;
  while (in >> w) argv.push_back(w);
  return run_process(argv, 10000);
}

NetnsStar::NetnsStar(int spokes) {
  if (geteuid() != 0) {
    unavailable_ = "needs root for ip netns";
    return;
  }
  if (sh("ip netns list") != 0) {
    unavailable_ = "ip netns unavailable";
    return;
  }
  reap_stale();
  std::string pid = std::to_string(getpid());
  hub_ = "kvdist_" + pid + "_hub";
  bridge_ = "kvbr" + pid;
  bool ok = sh("ip netns add " + hub_) == 0 && sh("ip -n " + hub_ + " link set lo up") == 0 &&
            sh("ip -n " + hub_ + " link add " + bridge_ + " type bridge") == 0 &&
            sh("ip -n " + hub_ + " addr add " + hub_ip() + "/24 dev " + bridge_) == 0 &&
            sh("ip -n " + hub_ + " link set " + bridge_ + " up") == 0;
  for (int i = 0; ok && i < spokes; ++i) {
    std::string ns = "kvdist_" + pid + "_s" + std::to_string(i);
    std::string h = "kvh" + pid + "_" + std::to_string(i);
    std::string s = "kvs" + pid + "_" + std::to_string(i);
    spokes_.push_back(ns);
    ok = sh("ip netns add " + ns) == 0 && sh("ip -n " + ns + " link set lo up") == 0 &&
         sh("ip link add " + h + " netns " + hub_ + " type veth peer name " + s + " netns " + ns) ==
             0 &&
         sh("ip -n " + hub_ + " link set " + h + " master " + bridge_) == 0 &&
         sh("ip -n " + hub_ + " link set " + h + " up") == 0 &&
         sh("ip -n " + ns + " addr add " + spoke_ip(i) + "/24 dev " + s) == 0 &&
         sh("ip -n " + ns + " link set " + s + " up") == 0;
    hub_ends_.push_back(h);
    spoke_ends_.push_back(s);
  }
  for (int i = 0; ok && i < spokes; ++i) ok = carrier(spokes_[i], spoke_ends_[i]);
  if (!ok) unavailable_ = "cannot create network namespaces with veth pairs here";
}

NetnsStar::~NetnsStar() {
  for (const std::string& ns : spokes_) sh("ip netns del " + ns);
  if (!hub_.empty()) sh("ip netns del " + hub_);
}

std::map<std::string, std::string> NetnsStar::hub_env() const {
  return {{"UCX_NET_DEVICES", bridge_}, {"KVDIST_NETWORK_PATH", "1"}};
}

std::map<std::string, std::string> NetnsStar::spoke_env(int i) const {
  return {{"UCX_NET_DEVICES", spoke_ends_.at(i)}, {"KVDIST_NETWORK_PATH", "1"}};
}

int NetnsStar::cut(int i) { return sh("ip -n " + hub_ + " link set " + hub_ends_.at(i) + " down"); }

}  // namespace kvdist::testing
