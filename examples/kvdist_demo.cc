// kvdist_demo: the seed example's flow between two real processes.
//
// The PROMPT (this process) listens, spawns a DECODER (this binary with
// --decoder), which links, allocates a KV cache and hands its 2 x layers
// addresses back. The PROMPT pushes a model-shaped cache with
// transfer_cache_async, layer by layer, first with every layer ready at once
// (bulk), then with simulated prefill compute per layer (layer-wise). The
// DECODER waits for each layer and the bytes are compared by hash.
//
//   kvdist_demo [--layers 32] [--tokens 4096] [--kv-heads 8] [--head-dim 128]
//               [--compute-ms 20] [--reps 3] [--tls sm|tcp|...] [--json FILE]
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kvdist/kvdist.h"

namespace {

using Clock = std::chrono::steady_clock;
using kvdist::StatusCode;

struct Args {
  uint32_t layers = 32;
  uint64_t tokens = 4096;
  uint64_t kv_heads = 8;
  uint64_t head_dim = 128;
  uint32_t compute_ms = 20;
  int reps = 3;
  std::string tls;
  std::string json;
  bool decoder = false;
  uint16_t port = 0;
  uint64_t tensor_bytes() const { return tokens * kv_heads * head_dim * 2; }  // bf16
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << k << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--layers")
      a.layers = std::stoul(next());
    else if (k == "--tokens")
      a.tokens = std::stoull(next());
    else if (k == "--kv-heads")
      a.kv_heads = std::stoull(next());
    else if (k == "--head-dim")
      a.head_dim = std::stoull(next());
    else if (k == "--compute-ms")
      a.compute_ms = std::stoul(next());
    else if (k == "--reps")
      a.reps = std::stoi(next());
    else if (k == "--tls")
      a.tls = next();
    else if (k == "--json")
      a.json = next();
    else if (k == "--decoder")
      a.decoder = true;
    else if (k == "--port")
      a.port = static_cast<uint16_t>(std::stoul(next()));
    else {
      std::cerr << "usage: kvdist_demo [--layers N] [--tokens N] [--kv-heads N] [--head-dim N]"
                   " [--compute-ms N] [--reps N] [--tls UCX_TLS] [--json FILE]\n";
      std::exit(2);
    }
  }
  return a;
}

// 64-bit words hashed: fast enough for 512 MiB on both sides.
uint64_t hash_words(const void* p, uint64_t len) {
  const auto* w = static_cast<const uint64_t*>(p);
  uint64_t h = 0x9E3779B97F4A7C15ull;
  for (uint64_t i = 0; i < len / 8; ++i) h = (h ^ w[i]) * 0x100000001B3ull + (h >> 29);
  return h;
}

// ---- DECODER ----------------------------------------------------------------

int run_decoder(const Args& a) {
  kvdist::DataDist dd(kvdist::Role::kDecoder, 2);
  kvdist::Options o;
  o.transfer_timeout_ms = 30000;
  if (!dd.init(o).ok()) return 1;
  auto r = dd.link_clusters({kvdist::ClusterInfo{1, "127.0.0.1", a.port}}, 5000);
  if (r.status != StatusCode::kSuccess) {
    std::cout << "err link " << kvdist::status_code_name(r.status) << std::endl;
    return 1;
  }
  kvdist::CacheDesc d;
  d.num_tensors = 2 * a.layers;
  d.shape = {1, static_cast<int64_t>(a.tensor_bytes() / 2)};
  d.data_type = kvdist::DataType::kBf16;
  auto cache = dd.cache_manager()->allocate_cache(d);
  if (!cache.ok()) {
    std::cout << "err alloc " << cache.status().to_string() << std::endl;
    return 1;
  }
  std::string line = "addrs";
  for (uint64_t addr : cache->tensor_addrs) line += " " + std::to_string(addr);
  std::cout << line << std::endl;
  std::string cmd;
  while (std::getline(std::cin, cmd)) {
    if (cmd == "wait") {
      // Every layer, in order, as a decoder would consume them.
      StatusCode worst = StatusCode::kSuccess;
      for (uint32_t l = 0; l < a.layers; ++l) {
        kvdist::Status s = dd.cache_manager()->wait_layer(cache.value(), l, 60000);
        if (!s.ok()) worst = s.code();
      }
      std::cout << "waited " << static_cast<int64_t>(worst) << std::endl;
    } else if (cmd == "hash") {
      std::string out = "hash";
      for (uint64_t addr : cache->tensor_addrs) {
        out += " " + std::to_string(hash_words(reinterpret_cast<void*>(addr), a.tensor_bytes()));
      }
      std::cout << out << std::endl;
    } else if (cmd == "reset") {
      dd.cache_manager()->reset_arrivals(cache.value());
      std::memset(reinterpret_cast<void*>(cache->tensor_addrs[0]), 0,
                  a.tensor_bytes() * 2 * a.layers);
      std::cout << "reset" << std::endl;
    } else if (cmd == "quit") {
      break;
    }
  }
  return 0;
}

// ---- PROMPT -----------------------------------------------------------------

class Child {
 public:
  Child(const std::string& self, const Args& a, uint16_t port) {
    int in[2];
    int out[2];
    if (pipe(in) != 0 || pipe(out) != 0) std::exit(1);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(in[0], 0);
      dup2(out[1], 1);
      std::string layers = std::to_string(a.layers), tokens = std::to_string(a.tokens),
                  heads = std::to_string(a.kv_heads), dim = std::to_string(a.head_dim),
                  p = std::to_string(port);
      execl(self.c_str(), self.c_str(), "--decoder", "--port", p.c_str(), "--layers",
            layers.c_str(), "--tokens", tokens.c_str(), "--kv-heads", heads.c_str(), "--head-dim",
            dim.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    close(in[0]);
    close(out[1]);
    to_ = in[1];
    from_ = fdopen(out[0], "r");
  }
  ~Child() {
    send("quit");
    int status = 0;
    for (int i = 0; i < 500 && waitpid(pid_, &status, WNOHANG) == 0; ++i) usleep(10000);
    kill(pid_, SIGKILL);
    waitpid(pid_, &status, 0);
  }
  void send(const std::string& cmd) {
    std::string line = cmd + "\n";
    if (write(to_, line.data(), line.size()) < 0) std::perror("write");
  }
  // One answer line, within 120 s.
  std::vector<std::string> read() {
    pollfd p{fileno(from_), POLLIN, 0};
    if (poll(&p, 1, 120000) <= 0) throw std::runtime_error("decoder did not answer");
    char* buf = nullptr;
    size_t cap = 0;
    ssize_t n = getline(&buf, &cap, from_);
    std::string line = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
    std::free(buf);
    std::istringstream in(line);
    std::vector<std::string> words;
    std::string w;
    while (in >> w) words.push_back(w);
    if (words.empty()) throw std::runtime_error("decoder exited");
    return words;
  }

 private:
  pid_t pid_ = -1;
  int to_ = -1;
  FILE* from_ = nullptr;
};

// Ready at once (compute_ms 0) or after compute_ms of "prefill" per layer.
class PrefillSimulator : public kvdist::LayerSynchronizer {
 public:
  explicit PrefillSimulator(uint32_t compute_ms) : compute_ms_(compute_ms) {}
  bool synchronize_layer(uint32_t, std::optional<int32_t>) override {
    if (compute_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(compute_ms_));
    last_ready_ = Clock::now();
    return true;
  }
  Clock::time_point last_ready() const { return last_ready_; }

 private:
  uint32_t compute_ms_;
  Clock::time_point last_ready_;
};

struct RunFigures {
  double seconds = 0;
  double exposed_ms = 0;
};

double gbps(uint64_t bytes, double s) { return s > 0 ? bytes / s / 1e9 : 0; }

int run_prompt(const Args& a, const std::string& self) {
  kvdist::DataDist dd(kvdist::Role::kPrompt, 1);
  kvdist::Options o;
  o.listen_ip_info = "127.0.0.1:0";
  o.transfer_timeout_ms = 30000;
  o.sync_kv_timeout_ms = 60000;
  kvdist::Status s = dd.init(o);
  if (!s.ok()) {
    std::cerr << "init: " << s.to_string() << "\n";
    return 1;
  }
  const uint64_t tensor = a.tensor_bytes();
  const uint64_t total = tensor * 2 * a.layers;
  kvdist::CacheDesc d;
  d.num_tensors = 2 * a.layers;
  d.shape = {1, static_cast<int64_t>(tensor / 2)};
  d.data_type = kvdist::DataType::kBf16;
  auto src = dd.cache_manager()->allocate_cache(d);
  if (!src.ok()) {
    std::cerr << "allocate_cache: " << src.status().to_string() << "\n";
    return 1;
  }
  for (uint32_t t = 0; t < d.num_tensors; ++t) {
    auto* w = reinterpret_cast<uint64_t*>(src->tensor_addrs[t]);
    for (uint64_t i = 0; i < tensor / 8; ++i)
      w[i] = (uint64_t{t} << 40) ^ (i * 0x9E3779B97F4A7C15ull);
  }

  Child child(self, a, dd.listen_port());
  auto addrs = child.read();
  if (addrs[0] != "addrs") {
    std::cerr << "decoder: " << addrs[0] << " " << (addrs.size() > 1 ? addrs[1] : "") << "\n";
    return 1;
  }
  kvdist::TransferConfig cfg;
  cfg.dst_cluster_id = 2;
  for (size_t i = 1; i < addrs.size(); ++i) cfg.dst_addrs.push_back(std::stoull(addrs[i]));

  auto run = [&](uint32_t compute_ms) -> RunFigures {
    child.send("reset");
    child.read();
    auto sync = std::make_shared<PrefillSimulator>(compute_ms);
    child.send("wait");
    auto start = Clock::now();
    auto task = dd.cache_manager()->transfer_cache_async(src.value(), sync, {cfg});
    if (!task.ok()) throw std::runtime_error(task.status().to_string());
    StatusCode code = task->synchronize();
    auto end = Clock::now();
    if (code != StatusCode::kSuccess) {
      throw std::runtime_error(std::string("transfer: ") + kvdist::status_code_name(code) + " " +
                               task->result_message(0));
    }
    auto waited = child.read();  // the decoder saw every layer arrive
    if (waited.size() < 2 || waited[1] != "0") throw std::runtime_error("decoder wait failed");
    RunFigures f;
    f.seconds = std::chrono::duration<double>(end - start).count();
    f.exposed_ms = std::chrono::duration<double, std::milli>(end - sync->last_ready()).count();
    return f;
  };

  // memcpy of the same bytes, tensor by tensor, into a separate buffer.
  std::vector<char> sink(total);
  std::memset(sink.data(), 1, total);
  double memcpy_best = 1e9;
  for (int r = 0; r < a.reps; ++r) {
    auto t0 = Clock::now();
    for (uint32_t t = 0; t < d.num_tensors; ++t) {
      std::memcpy(sink.data() + t * tensor, reinterpret_cast<void*>(src->tensor_addrs[t]), tensor);
    }
    memcpy_best = std::min(memcpy_best, std::chrono::duration<double>(Clock::now() - t0).count());
  }

  std::printf("kvdist demo: %u layers x K,V of %llu tokens x %llu kv heads x %llu dims (bf16)\n",
              a.layers, static_cast<unsigned long long>(a.tokens),
              static_cast<unsigned long long>(a.kv_heads),
              static_cast<unsigned long long>(a.head_dim));
  std::printf("  %.1f MiB per tensor, %.1f MiB in all; UCX_TLS=%s\n", tensor / 1048576.0,
              total / 1048576.0, a.tls.empty() ? "(default)" : a.tls.c_str());
  run(0);  // warm-up: first touch of the mappings on both sides
  std::vector<RunFigures> bulk, layered;
  for (int r = 0; r < a.reps; ++r) bulk.push_back(run(0));
  for (int r = 0; r < a.reps; ++r) layered.push_back(run(a.compute_ms));

  child.send("hash");
  auto hashes = child.read();
  int bad = 0;
  for (uint32_t t = 0; t < d.num_tensors; ++t) {
    uint64_t want = hash_words(reinterpret_cast<void*>(src->tensor_addrs[t]), tensor);
    if (hashes.size() <= t + 1 || std::stoull(hashes[t + 1]) != want) ++bad;
  }

  auto best = [](const std::vector<RunFigures>& v, auto key) {
    double b = 1e18;
    for (const auto& f : v) b = std::min(b, key(f));
    return b;
  };
  auto median = [](std::vector<RunFigures> v, auto key) {
    std::vector<double> x;
    for (const auto& f : v) x.push_back(key(f));
    std::sort(x.begin(), x.end());
    return x[x.size() / 2];
  };
  auto secs = [](const RunFigures& f) { return f.seconds; };
  auto exposed = [](const RunFigures& f) { return f.exposed_ms; };
  double bulk_med = median(bulk, secs);
  double one_layer_ms = bulk_med * 1000 / a.layers;
  std::printf("\n  %-34s %10s %10s\n", "", "best", "median");
  std::printf("  %-34s %8.2f GB/s %7.2f GB/s\n", "memcpy, 1 thread, same bytes",
              gbps(total, memcpy_best), gbps(total, memcpy_best));
  std::printf("  %-34s %8.2f GB/s %7.2f GB/s\n", "kvdist bulk (all layers ready)",
              gbps(total, best(bulk, secs)), gbps(total, bulk_med));
  std::printf("  %-34s %8.1f ms   %7.1f ms\n", "one layer's transfer (bulk / layers)",
              best(bulk, secs) * 1000 / a.layers, one_layer_ms);
  std::printf("  %-34s %8.1f ms   %7.1f ms\n", "layer-wise: exposed after last layer",
              best(layered, exposed), median(layered, exposed));
  std::printf("  %-34s %8.1f ms\n", "layer-wise: prefill compute", a.compute_ms * 1.0 * a.layers);
  std::printf("\n  bytes verified on the decoder: %s (%u tensors)\n",
              bad == 0 ? "all equal" : "MISMATCH", d.num_tensors);
  std::printf("  layer-wise hid %.0f %% of the transfer behind compute\n",
              100.0 * std::max(0.0, 1.0 - median(layered, exposed) / (bulk_med * 1000)));
  if (!a.json.empty()) {
    std::ofstream j(a.json);
    j << "{\"layers\": " << a.layers << ", \"tensor_bytes\": " << tensor
      << ", \"total_bytes\": " << total << ", \"ucx_tls\": \"" << a.tls << "\""
      << ", \"memcpy_gbps\": " << gbps(total, memcpy_best)
      << ", \"bulk_gbps_best\": " << gbps(total, best(bulk, secs))
      << ", \"bulk_gbps_median\": " << gbps(total, bulk_med)
      << ", \"one_layer_ms\": " << one_layer_ms
      << ", \"layerwise_exposed_ms_median\": " << median(layered, exposed)
      << ", \"compute_ms_per_layer\": " << a.compute_ms
      << ", \"verified\": " << (bad == 0 ? "true" : "false") << "}\n";
  }
  return bad == 0 ? 0 : 3;
}

}  // namespace

int main(int argc, char** argv) {
  Args a = parse(argc, argv);
  if (!a.tls.empty()) setenv("UCX_TLS", a.tls.c_str(), 1);  // inherited by the decoder
  if (a.decoder) return run_decoder(a);
  char self[4096] = {};
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return 1;
  try {
    return run_prompt(a, self);
  } catch (const std::exception& e) {
    std::cerr << "kvdist_demo: " << e.what() << "\n";
    return 1;
  }
}
