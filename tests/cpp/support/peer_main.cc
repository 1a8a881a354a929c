// kvdist_test_peer: a DataDist in its own process, driven line by line over
// stdin/stdout by the tests (one command per line, one answer per line).
//
//   init prompt|decoder <cluster> [ip:port|-] [transfer_timeout_ms]
//                                             -> ok <listen_port>
//   link <cluster> <ip> <port> <timeout_ms>   -> ok <code> [why it failed]
//   unlink <cluster>                          -> ok <code>
//   alloc <blocks 0|1> <num_tensors> <dims..> -> ok <cache_id> <addr>...   (uint8 elements)
//   register <num_tensors> <dims..>           -> ok <cache_id> <addr>...   (caller-owned memory)
//   free <cache_id>                           -> ok
//   fill <addr> <len> <byte>                  -> ok
//   pattern <addr> <len> <seed>               -> ok
//   hash <addr> <len>                         -> ok <hash>
//   hashv <len> <addr>...                     -> ok <hash>   (chained over the ranges)
//   wait <cache_id> <layer> <timeout_ms>      -> ok <code>
//   reset <cache_id>                          -> ok <code>
//   pool_used                                 -> ok <bytes>
//   push <cache_id> <dst_cluster> <gated 0|1> <dst addr>...   -> ok
//       (PROMPT) transfer_cache_async of every layer, batch index 0; gated:
//       layer l goes only after "release l" (synchronizer deadline 30 s)
//   pushn <cache_id> <gated 0|1> <cluster>=<addr>,<addr>... ...   -> ok
//       the same to several DECODERs in one task, one config each
//   release <layer>|all                       -> ok
//   task_wait <timeout_ms>                    -> ok <code> <result|->...
//   task_message <config>                     -> ok <the config's error message>
//   keyalloc <keys> <first_req|prefix:N|blocks:M> <num_tensors> <dims..>
//                                             -> ok <cache_id> <addr>...
//       (PROMPT) allocate_cache with keys req_id first..first+keys-1 (or one
//       prefix key N, or allocate_blocks_cache under blocks key of model M)
//   rmkey <req_id>                            -> ok <code>
//   pull <dst_cache> <cluster> <key> [opt=value]...   -> ok <code> [why]
//       key: req:<id> | prefix:<id> | id:<cache>:<batch> | blocks:<model>;
//       opts: batch= size= soff= doff= src=a:b dst=a:b per=
//       sb=i,j,.. db=i,j,.. timeout=
//   stats                                     -> ok <rss_bytes> <open_fds>
//   quit
// Errors answer "err <code> <message>". KVDIST_TEST_STDERR=<path> in the
// environment sends the process's stderr (kvdist's log) to that file.
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bytes_hash.h"
#include "kvdist/kvdist.h"
#include "proc_stats.h"

namespace {

using kvdist::StatusCode;

std::string code_str(StatusCode c) { return std::to_string(static_cast<int64_t>(c)); }

constexpr int kGateMs = 30000;

// The synchronizer of "push": every layer at once, or each layer only once
// "release" let it through.
class Gate : public kvdist::LayerSynchronizer {
 public:
  explicit Gate(bool gated) : all_(!gated) {}
  bool synchronize_layer(uint32_t layer, std::optional<int32_t>) override {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, std::chrono::milliseconds(kGateMs),
                        [&] { return all_ || open_.count(layer) != 0; });
  }
  void release(std::optional<uint32_t> layer) {
    std::lock_guard<std::mutex> lock(mu_);
    if (layer) {
      open_.insert(*layer);
    } else {
      all_ = true;
    }
    cv_.notify_all();
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool all_;
  std::set<uint32_t> open_;
};

std::vector<uint64_t> parse_list(const std::string& text) {
  std::vector<uint64_t> out;
  std::istringstream in(text);
  std::string a;
  while (std::getline(in, a, ',')) out.push_back(std::stoull(a));
  return out;
}

kvdist::LayerRange parse_range(const std::string& text) {
  size_t colon = text.find(':');
  return kvdist::LayerRange{static_cast<uint32_t>(std::stoul(text.substr(0, colon))),
                            static_cast<uint32_t>(std::stoul(text.substr(colon + 1)))};
}

// "req:<id>", "prefix:<id>", "id:<cache>:<batch>", "blocks:<model>" of pull.
kvdist::CacheKey parse_key(const std::string& word, uint64_t cluster) {
  kvdist::CacheKey k;
  k.prompt_cluster_id = cluster;
  size_t colon = word.find(':');
  std::string kind = word.substr(0, colon);
  std::string rest = word.substr(colon + 1);
  if (kind == "req") {
    k.req_id = std::stoull(rest);
  } else if (kind == "prefix") {
    k.prefix_id = std::stoull(rest);
  } else if (kind == "id") {
    k.kind = kvdist::CacheKey::Kind::kCacheId;
    size_t c2 = rest.find(':');
    k.cache_id = std::stoll(rest.substr(0, c2));
    k.batch_index = static_cast<uint32_t>(std::stoul(rest.substr(c2 + 1)));
  } else {
    k.kind = kvdist::CacheKey::Kind::kBlocks;
    k.model_id = std::stoull(rest);
  }
  return k;
}

// "<cluster>=<addr>,<addr>,..." of pushn.
kvdist::TransferConfig parse_destination(const std::string& word) {
  kvdist::TransferConfig cfg;
  size_t eq = word.find('=');
  cfg.dst_cluster_id = std::stoull(word.substr(0, eq));
  std::istringstream addrs(word.substr(eq + 1));
  std::string a;
  while (std::getline(addrs, a, ',')) cfg.dst_addrs.push_back(std::stoull(a));
  return cfg;
}

}  // namespace

int main() {
  std::unique_ptr<kvdist::DataDist> dd;
  std::map<int64_t, kvdist::KvCache> caches;
  std::list<std::vector<char>> owned;  // memory of registered caches
  std::shared_ptr<Gate> gate;
  std::optional<kvdist::CacheTask> task;
  std::string line;
  auto reply = [](const std::string& s) {
    std::cout << s << std::endl;  // flush: the test waits for each line
  };
  // "ok <cache_id> <addr>..." for a new cache (kept for later commands).
  auto reply_cache = [&](const kvdist::Result<kvdist::KvCache>& c) {
    if (!c.ok()) {
      reply("err " + code_str(c.status().code()) + " " + c.status().message());
      return;
    }
    std::string out = "ok " + std::to_string(c->cache_id);
    for (uint64_t a : c->tensor_addrs) out += " " + std::to_string(a);
    caches[c->cache_id] = c.value();
    reply(out);
  };
  if (const char* log = std::getenv("KVDIST_TEST_STDERR")) {
    if (std::freopen(log, "w", stderr) != nullptr) std::setvbuf(stderr, nullptr, _IONBF, 0);
  }
  while (std::getline(std::cin, line)) {
    std::istringstream in(line);
    std::string cmd;
    in >> cmd;
    if (cmd == "quit") break;
    if (cmd == "init") {
      std::string role;
      uint64_t cluster = 0;
      std::string listen;
      int32_t transfer_timeout_ms = 5000;
      in >> role >> cluster >> listen >> transfer_timeout_ms;
      if (listen == "-") listen.clear();
      dd = std::make_unique<kvdist::DataDist>(
          role == "prompt" ? kvdist::Role::kPrompt : kvdist::Role::kDecoder, cluster);
      kvdist::Options o;
      o.listen_ip_info = listen;
      o.transfer_timeout_ms = transfer_timeout_ms;
      kvdist::Status s = dd->init(o);
      reply(s.ok() ? "ok " + std::to_string(dd->listen_port())
                   : "err " + code_str(s.code()) + " " + s.message());
    } else if (!dd) {
      reply("err -1 not initialised");
    } else if (cmd == "link" || cmd == "unlink") {
      kvdist::ClusterInfo c;
      int timeout = 3000;
      in >> c.remote_cluster_id >> c.remote_ip >> c.remote_port >> timeout;
      auto r = cmd == "link" ? dd->link_clusters({c}, timeout) : dd->unlink_clusters({c}, timeout);
      reply("ok " + code_str(r.per_cluster.empty() ? r.status : r.per_cluster[0]) +
            (r.messages.empty() || r.messages[0].empty() ? "" : " " + r.messages[0]));
    } else if (cmd == "alloc") {
      int blocks = 0;
      kvdist::CacheDesc d;
      d.data_type = kvdist::DataType::kUint8;
      in >> blocks >> d.num_tensors;
      int64_t dim = 0;
      while (in >> dim) d.shape.push_back(dim);
      auto c = blocks ? dd->cache_manager()->allocate_blocks_cache(d)
                      : dd->cache_manager()->allocate_cache(d);
      reply_cache(c);
    } else if (cmd == "register") {
      kvdist::CacheDesc d;
      d.data_type = kvdist::DataType::kUint8;
      in >> d.num_tensors;
      int64_t dim = 0;
      while (in >> dim) d.shape.push_back(dim);
      std::vector<uint64_t> addrs;
      for (uint32_t t = 0; t < d.num_tensors; ++t) {
        owned.emplace_back(d.tensor_bytes());
        addrs.push_back(reinterpret_cast<uint64_t>(owned.back().data()));
      }
      auto c = dd->cache_manager()->register_cache(d, addrs);
      if (!c.ok()) {
        reply("err " + code_str(c.status().code()) + " " + c.status().message());
        continue;
      }
      std::string out = "ok " + std::to_string(c->cache_id);
      for (uint64_t a : c->tensor_addrs) out += " " + std::to_string(a);
      reply(out);
    } else if (cmd == "free") {
      int64_t id = 0;
      in >> id;
      kvdist::Status s = dd->cache_manager()->deallocate_cache(id);
      caches.erase(id);
      reply("ok " + code_str(s.code()));
    } else if (cmd == "fill" || cmd == "pattern" || cmd == "hash") {
      uint64_t addr = 0;
      uint64_t len = 0;
      uint64_t arg = 0;
      in >> addr >> len >> arg;
      void* p = reinterpret_cast<void*>(addr);
      if (cmd == "fill") {
        std::memset(p, static_cast<int>(arg), len);
        reply("ok");
      } else if (cmd == "pattern") {
        kvdist::testing::fill_pattern(p, len, arg);
        reply("ok");
      } else {
        reply("ok " + std::to_string(kvdist::testing::fnv1a(p, len)));
      }
    } else if (cmd == "wait" || cmd == "reset") {
      int64_t id = 0;
      uint32_t layer = 0;
      int timeout = 0;
      in >> id >> layer >> timeout;
      kvdist::KvCache c;
      c.cache_id = id;
      kvdist::Status s = cmd == "wait" ? dd->cache_manager()->wait_layer(c, layer, timeout)
                                       : dd->cache_manager()->reset_arrivals(c);
      reply("ok " + code_str(s.code()));
    } else if (cmd == "hashv") {
      uint64_t len = 0;
      uint64_t addr = 0;
      in >> len;
      uint64_t h = 0;
      while (in >> addr) h = h * 31 + kvdist::testing::fnv1a(reinterpret_cast<void*>(addr), len);
      reply("ok " + std::to_string(h));
    } else if (cmd == "push" || cmd == "pushn") {
      int64_t id = 0;
      int gated = 0;
      std::vector<kvdist::TransferConfig> cfgs;
      if (cmd == "push") {
        kvdist::TransferConfig cfg;
        in >> id >> cfg.dst_cluster_id >> gated;
        uint64_t addr = 0;
        while (in >> addr) cfg.dst_addrs.push_back(addr);
        cfgs.push_back(std::move(cfg));
      } else {
        in >> id >> gated;
        std::string dst;
        while (in >> dst) cfgs.push_back(parse_destination(dst));
      }
      auto it = caches.find(id);
      if (it == caches.end()) {
        reply("err -1 unknown cache");
        continue;
      }
      gate = std::make_shared<Gate>(gated != 0);
      kvdist::TransferOptions opts;
      opts.sync_timeout_ms = kGateMs + 1000;
      auto t = dd->cache_manager()->transfer_cache_async(it->second, gate, cfgs, {}, opts);
      if (!t.ok()) {
        reply("err " + code_str(t.status().code()) + " " + t.status().message());
        continue;
      }
      task = t.value();
      reply("ok");
    } else if (cmd == "release") {
      std::string which;
      in >> which;
      if (!gate) {
        reply("err -1 nothing pushed");
        continue;
      }
      gate->release(which == "all" ? std::nullopt : std::optional<uint32_t>(std::stoul(which)));
      reply("ok");
    } else if (cmd == "task_wait") {
      uint32_t timeout = 0;
      in >> timeout;
      if (!task) {
        reply("err -1 nothing pushed");
        continue;
      }
      std::string out = "ok " + code_str(task->synchronize(timeout));
      for (const auto& r : task->get_results(0)) out += " " + (r ? code_str(*r) : std::string("-"));
      reply(out);
    } else if (cmd == "task_message") {
      size_t i = 0;
      in >> i;
      reply(task ? "ok " + task->result_message(i) : "err -1 nothing pushed");
    } else if (cmd == "send") {
      uint64_t cluster = 0;
      in >> cluster;
      std::string text;
      std::getline(in >> std::ws, text);
      kvdist::Status st = dd->send_message(cluster, text);
      reply(st.ok() ? "ok" : "err " + code_str(st.code()) + " " + st.message());
    } else if (cmd == "recv") {
      int32_t timeout = 0;
      in >> timeout;
      auto msgs = dd->receive_messages(1, timeout);
      reply(msgs.empty() ? "err -1 no message"
                         : "ok " + std::to_string(msgs[0].from_cluster) + " " + msgs[0].payload);
    } else if (cmd == "keyalloc") {
      uint32_t nkeys = 0;
      std::string first;
      kvdist::CacheDesc d;
      d.data_type = kvdist::DataType::kUint8;
      in >> nkeys >> first >> d.num_tensors;
      int64_t dim = 0;
      while (in >> dim) d.shape.push_back(dim);
      std::vector<kvdist::CacheKey> keys;
      kvdist::Result<kvdist::KvCache> c = kvdist::Status();
      if (first.rfind("blocks:", 0) == 0) {
        c = dd->cache_manager()->allocate_blocks_cache(d, parse_key(first, dd->cluster_id()));
      } else {
        if (first.rfind("prefix:", 0) == 0) {
          keys.push_back(parse_key(first, dd->cluster_id()));
        } else {
          for (uint32_t i = 0; i < nkeys; ++i) {
            kvdist::CacheKey k;
            k.prompt_cluster_id = dd->cluster_id();
            k.req_id = std::stoull(first) + i;
            keys.push_back(k);
          }
        }
        c = dd->cache_manager()->allocate_cache(d, keys);
      }
      reply_cache(c);
    } else if (cmd == "rmkey") {
      kvdist::CacheKey k;
      k.prompt_cluster_id = dd->cluster_id();
      in >> k.req_id;
      reply("ok " + code_str(dd->cache_manager()->remove_cache_key(k).code()));
    } else if (cmd == "pull") {
      int64_t id = 0;
      uint64_t cluster = 0;
      std::string key;
      in >> id >> cluster >> key;
      kvdist::PullSpec spec;
      std::string opt;
      while (in >> opt) {
        size_t eq = opt.find('=');
        std::string name = opt.substr(0, eq);
        std::string v = opt.substr(eq + 1);
        if (name == "batch") spec.batch_index = static_cast<uint32_t>(std::stoul(v));
        if (name == "size") spec.size = std::stoll(v);
        if (name == "soff") spec.src_offset = std::stoull(v);
        if (name == "doff") spec.dst_offset = std::stoull(v);
        if (name == "src") spec.src_layers = parse_range(v);
        if (name == "dst") spec.dst_layers = parse_range(v);
        if (name == "per") spec.tensors_per_layer = static_cast<uint32_t>(std::stoul(v));
        if (name == "sb") spec.src_blocks = parse_list(v);
        if (name == "db") spec.dst_blocks = parse_list(v);
        if (name == "timeout") spec.timeout_ms = std::stoi(v);
      }
      auto it = caches.find(id);
      kvdist::KvCache dst;
      if (it != caches.end()) {
        dst = it->second;
      } else {
        dst.cache_id = id;  // freed or unknown: the manager says so
      }
      kvdist::Status st = dd->cache_manager()->pull_cache(parse_key(key, cluster), dst, spec);
      reply("ok " + code_str(st.code()) + (st.ok() ? "" : " " + st.message()));
    } else if (cmd == "stats") {
      reply("ok " + std::to_string(kvdist::testing::rss_bytes()) + " " +
            std::to_string(kvdist::testing::open_fds()));
    } else if (cmd == "pool_used") {
      reply("ok " + std::to_string(dd->cache_manager()->pool_bytes_in_use()));
    } else {
      reply("err -1 unknown command " + cmd);
    }
  }
  if (gate) gate->release(std::nullopt);
  task.reset();
  dd.reset();
  return 0;
}
