#include "peer_process.h"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace kvdist::testing {

const char* peer_binary() { return KVDIST_TEST_PEER_PATH; }

namespace {

std::vector<char*> c_argv(std::vector<std::string>& args) {
  std::vector<char*> out;
  for (std::string& a : args) out.push_back(a.data());
  out.push_back(nullptr);
  return out;
}

}  // namespace

PeerProcess::PeerProcess(const std::map<std::string, std::string>& env,
                         const std::vector<std::string>& prefix) {
  std::vector<std::string> args = prefix;
  args.push_back(peer_binary());
  std::vector<char*> argv = c_argv(args);
  int in[2];
  int out[2];
  if (pipe(in) != 0 || pipe(out) != 0) throw std::runtime_error("pipe failed");
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    dup2(in[0], 0);
    dup2(out[1], 1);
    close(in[0]);
    close(in[1]);
    close(out[0]);
    close(out[1]);
    // UCX logs to stdout by default: keep the answer lines clean.
    setenv("UCX_LOG_FILE", "stderr", 0);
    for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  to_child_ = in[1];
  from_child_ = out[0];
}

PeerProcess::~PeerProcess() {
  if (pid_ > 0) {
    call("quit", 100);
    // Give it a moment to finalize cleanly, then make sure it is gone.
    auto end = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    int status = 0;
    while (waitpid(pid_, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > end) {
        kill_now();
        break;
      }
      usleep(10000);
    }
  }
  if (to_child_ >= 0) close(to_child_);
  if (from_child_ >= 0) close(from_child_);
}

void PeerProcess::kill_now() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  int status = 0;
  waitpid(pid_, &status, 0);
  pid_ = -1;
}

int PeerProcess::wait_exit(int timeout_ms) {
  if (pid_ <= 0) return -1;
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > end) return -1;
    usleep(10000);
  }
  pid_ = -1;
  return status;
}

std::string PeerProcess::call(const std::string& command, int timeout_ms) {
  if (!post(command)) return "";
  return answer(timeout_ms);
}

bool PeerProcess::post(const std::string& command) {
  if (pid_ <= 0) return false;
  std::string line = command + "\n";
  return write(to_child_, line.data(), line.size()) == static_cast<ssize_t>(line.size());
}

std::string PeerProcess::answer(int timeout_ms) {
  if (pid_ <= 0) return "";
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string answer = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return answer;
    }
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    end - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) return "";
    pollfd p{from_child_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    ssize_t n = read(from_child_, buf, sizeof(buf));
    if (n <= 0) return "";
    buffer_.append(buf, static_cast<size_t>(n));
  }
}

std::vector<std::string> PeerProcess::ok(const std::string& command, int timeout_ms) {
  std::string answer = call(command, timeout_ms);
  std::istringstream in(answer);
  std::vector<std::string> words;
  std::string w;
  while (in >> w) words.push_back(w);
  if (words.empty() || words[0] != "ok") {
    throw std::runtime_error("peer answered '" + answer + "' to '" + command + "'");
  }
  return words;
}

int run_process(const std::vector<std::string>& argv_in, int timeout_ms, std::string* output) {
  std::vector<std::string> args = argv_in;
  std::vector<char*> argv = c_argv(args);
  int out[2];
  if (pipe(out) != 0) return -1;
  pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    dup2(out[1], 1);
    close(out[0]);
    close(out[1]);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(out[1]);
  auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  bool timed_out = false;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    end - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      timed_out = true;
      break;
    }
    pollfd p{out[0], POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    char buf[4096];
    ssize_t n = read(out[0], buf, sizeof(buf));
    if (n <= 0) break;  // EOF: the child closed its output
    if (output != nullptr) output->append(buf, static_cast<size_t>(n));
  }
  close(out[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  waitpid(pid, &status, 0);
  if (timed_out || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

RemoteCache remote_alloc(PeerProcess& p, uint32_t tensors, uint64_t bytes) {
  auto r = p.ok("alloc 0 " + s(tensors) + " 1 " + s(bytes));
  RemoteCache c;
  c.id = std::stoll(r.at(1));
  for (size_t i = 2; i < r.size(); ++i) c.addrs.push_back(std::stoull(r[i]));
  return c;
}

uint64_t remote_hash(PeerProcess& p, uint64_t addr, uint64_t len) {
  return std::stoull(p.ok("hash " + s(addr) + " " + s(len)).at(1));
}

std::string join(const std::vector<uint64_t>& v) {
  std::string out;
  for (uint64_t x : v) out += " " + s(x);
  return out;
}

}  // namespace kvdist::testing
