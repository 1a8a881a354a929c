#include "core/pull_server.h"

#include <string>
#include <utility>

#include "core/notes.h"

namespace kvdist::core {
namespace {

// Requests waiting to be served; more from a flooding peer are refused.
constexpr size_t kMaxQueued = 1024;
// A pull's writes: at most this many bytes each, this many in flight.
constexpr uint64_t kChunkBytes = uint64_t{16} << 20;
constexpr int kChunksInFlight = 4;

Status invalid(std::string msg) { return Status(StatusCode::kParamInvalid, std::move(msg)); }

// The answer to request `id`: its status, and why it failed, or what a
// successful request returns (a resolve's CacheInfo).
std::string reply_note(uint64_t id, const Status& status, std::string result = {}) {
  Note n;
  n.kind = Note::Kind::kPullReply;
  n.task_id = id;
  n.code = status.code();
  n.payload = status.ok() ? std::move(result) : status.message().substr(0, 1024);
  return encode_note(n);
}

// The writes a request asks for, checked against the source cache: every
// byte read lies inside a tensor of `src`, in the batch slice the key names
// (contiguous) or in blocks of the cache (blocks).
Status plan_pull(const CacheRegistry::PullSource& source, const PullRequest& req,
                 std::vector<net::WriteOp>* ops) {
  const KvCache& c = source.cache;
  const uint32_t num_tensors = c.desc.num_tensors;
  std::vector<uint32_t> tensors = req.src_tensors;
  if (tensors.empty()) {
    for (uint32_t t = 0; t < num_tensors; ++t) tensors.push_back(t);
  }
  std::vector<bool> seen(num_tensors, false);
  for (uint32_t t : tensors) {
    if (t >= num_tensors) {
      return invalid("source tensor " + std::to_string(t) + " is not below the " +
                     std::to_string(num_tensors) + " tensors of the source cache");
    }
    if (seen[t]) return invalid("source tensor " + std::to_string(t) + " is named twice");
    seen[t] = true;
  }
  // Bounded work per request, whatever a peer sends: at most every tensor
  // once, times the block pairs of one note.
  if (req.blocks() && tensors.size() * req.src_blocks.size() > kMaxPullRanges) {
    return invalid("a pull of " + std::to_string(tensors.size()) + " tensors x " +
                   std::to_string(req.src_blocks.size()) + " blocks is more than " +
                   std::to_string(kMaxPullRanges) + " ranges in one request");
  }
  if (tensors.size() != req.dst_addrs.size()) {
    return invalid("the source gives " + std::to_string(tensors.size()) +
                   " tensors, the destination takes " + std::to_string(req.dst_addrs.size()));
  }
  const uint64_t rows = static_cast<uint64_t>(c.desc.shape[0]);
  const uint64_t stride = c.desc.tensor_bytes() / rows;
  if (!req.blocks()) {
    if (req.size == 0 || req.src_offset > stride || req.size > stride - req.src_offset) {
      return invalid("src_cache_offset " + std::to_string(req.src_offset) + " + size " +
                     std::to_string(req.size) + " exceeds the source's " + std::to_string(stride) +
                     " bytes per batch");
    }
    for (size_t k = 0; k < tensors.size(); ++k) {
      ops->push_back({c.tensor_addrs[tensors[k]] + source.batch_index * stride + req.src_offset,
                      req.dst_addrs[k], req.size, 0});
    }
    return Status();
  }
  if (req.dst_block_bytes != stride) {
    return invalid("the destination's blocks are " + std::to_string(req.dst_block_bytes) +
                   " bytes, the source's " + std::to_string(stride));
  }
  const auto& s = req.src_blocks;
  const auto& d = req.dst_blocks;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] >= rows) {
      return invalid("prompt_blocks[" + std::to_string(i) + "] = " + std::to_string(s[i]) +
                     " is not below " + std::to_string(rows) + " blocks");
    }
    if (d[i] > (UINT64_MAX - stride) / stride) {
      return invalid("decoder_blocks[" + std::to_string(i) + "] is out of range");
    }
  }
  for (size_t k = 0; k < tensors.size(); ++k) {
    const uint64_t src_base = c.tensor_addrs[tensors[k]];
    for (size_t i = 0; i < s.size();) {
      size_t run = 1;
      while (i + run < s.size() && s[i + run] == s[i] + run && d[i + run] == d[i] + run) ++run;
      ops->push_back({src_base + s[i] * stride, req.dst_addrs[k] + d[i] * stride, run * stride, 0});
      i += run;
    }
  }
  return Status();
}

}  // namespace

PullServer::PullServer(std::shared_ptr<net::Transport> transport,
                       std::shared_ptr<CacheRegistry> registry, std::chrono::milliseconds timeout,
                       std::function<bool(uint64_t)> pushing)
    : transport_(std::move(transport)),
      registry_(std::move(registry)),
      timeout_(timeout),
      pushing_(std::move(pushing)) {}

PullServer::~PullServer() { stop(); }

void PullServer::start() {
  thread_ = std::thread([this] { run(); });
}

void PullServer::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    queue_.clear();
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void PullServer::submit(uint64_t peer, PullRequest req) {
  Job job;
  job.peer = peer;
  job.id = req.pull_id;
  job.pull = std::move(req);
  queue(std::move(job));
}

void PullServer::submit_resolve(uint64_t peer, uint64_t id, const CacheKey& key) {
  Job job;
  job.peer = peer;
  job.resolve = true;
  job.id = id;
  job.key = key;
  queue(std::move(job));
}

void PullServer::queue(Job job) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stopping_) return;
  if (queue_.size() >= kMaxQueued) {
    transport_->notify(job.peer, reply_note(job.id, Status(StatusCode::kLinkBusy,
                                                           "too many requests are waiting")));
    return;
  }
  queue_.push_back(std::move(job));
  cv_.notify_one();
}

void PullServer::serve_resolve(const Job& job) {
  auto info = registry_->describe(job.key);
  if (!info.ok()) {
    reply(job.peer, job.id, info.status());
    return;
  }
  transport_->notify(job.peer, reply_note(job.id, Status(), encode_cache_info(info.value())));
}

bool PullServer::serving(uint64_t peer) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = serving_.find(peer);
  return it != serving_.end() && it->second > 0;
}

void PullServer::run() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (stopping_) return;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    lock.unlock();
    if (job.resolve) {
      serve_resolve(job);
    } else {
      serve(job.peer, job.pull);
    }
    lock.lock();
  }
}

void PullServer::reply(uint64_t peer, uint64_t pull_id, const Status& status) {
  transport_->notify(peer, reply_note(pull_id, status));
}

void PullServer::finished_serving(uint64_t peer) {
  std::lock_guard<std::mutex> lock(mu_);
  if (--serving_[peer] <= 0) serving_.erase(peer);
}

void PullServer::serve(uint64_t peer, const PullRequest& req) {
  if (pushing_ && pushing_(peer)) {
    reply(peer, req.pull_id,
          Status(StatusCode::kLinkBusy, "a transfer_cache_async task to this cluster is running"));
    return;
  }
  auto source = registry_->pin_source(req.key);
  if (!source.ok()) {
    reply(peer, req.pull_id, source.status());
    return;
  }
  const int64_t cache_id = source->cache.cache_id;
  std::vector<net::WriteOp> ops;
  Status s = plan_pull(source.value(), req, &ops);
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::vector<uint64_t> regions;
  if (s.ok()) {
    for (const auto& op : ops) ranges.emplace_back(op.remote_addr, op.len);
    // Every destination range lies in memory the puller exposed.
    s = transport_->check_remote(peer, ranges, timeout_, &regions);
  }
  if (!s.ok()) {
    registry_->unpin(cache_id);
    reply(peer, req.pull_id, s);
    return;
  }
  for (size_t i = 0; i < ops.size() && i < regions.size(); ++i) ops[i].region_id = regions[i];
  {
    std::lock_guard<std::mutex> lock(mu_);
    ++serving_[peer];
  }
  // Several writes of at most kChunkBytes, a few in flight at a time, as a
  // push goes layer by layer: one write of a whole paged cache would stage
  // all of it at once on the network path (1.1 GB/s and twice the CPU,
  // against 2.1 for the push, 4096 tokens between namespaces).
  auto state = std::make_shared<Writes>();
  state->peer = peer;
  state->pull_id = req.pull_id;
  state->cache_id = cache_id;
  state->key = req.keep_key ? std::nullopt : source->key;
  state->tensors = req.src_tensors;
  uint64_t bytes = 0;
  for (net::WriteOp& op : ops) {
    if (state->chunks.empty() || bytes >= kChunkBytes) {
      state->chunks.emplace_back();
      bytes = 0;
    }
    bytes += op.len;
    state->chunks.back().push_back(op);
  }
  post_writes(state);
}

void PullServer::post_writes(const std::shared_ptr<Writes>& state) {
  std::vector<std::vector<net::WriteOp>> now;
  {
    std::lock_guard<std::mutex> lock(state->mu);
    while (state->failure.ok() && state->in_flight < kChunksInFlight &&
           state->next < state->chunks.size()) {
      now.push_back(std::move(state->chunks[state->next++]));
      ++state->in_flight;
    }
  }
  std::weak_ptr<PullServer> weak = weak_from_this();
  for (auto& chunk : now) {
    transport_->write(state->peer, std::move(chunk), std::string(),
                      [weak, state](const Status& done) {
                        if (auto self = weak.lock()) self->wrote(state, done);
                      });
  }
}

void PullServer::wrote(const std::shared_ptr<Writes>& state, const Status& done) {
  bool finished = false;
  {
    std::lock_guard<std::mutex> lock(state->mu);
    --state->in_flight;
    if (!done.ok() && state->failure.ok()) state->failure = done;
    finished =
        state->in_flight == 0 && (!state->failure.ok() || state->next == state->chunks.size());
  }
  if (!finished) {
    post_writes(state);
    return;
  }
  // Every write landed (or none can still land): the reply goes after them.
  registry_->unpin(state->cache_id);
  if (state->failure.ok() && state->key) registry_->mark_pulled(*state->key, state->tensors);
  reply(state->peer, state->pull_id, state->failure);
  finished_serving(state->peer);
}

}  // namespace kvdist::core
