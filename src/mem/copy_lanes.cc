#include "mem/copy_lanes.h"

#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>

#include "common/spin.h"
#include "mem/stream_copy.h"

namespace kvdist::mem {

struct CopyBatch {
  std::vector<CopyPiece> pieces;
  std::vector<size_t> group_end;  // group g: pieces [g ? group_end[g-1] : 0, group_end[g])
  std::atomic<size_t> next_group{0};
  std::atomic<size_t> groups_left{0};
  std::atomic<bool> cancelled{false};
  std::atomic<int> error{0};
  // The submitter waits a little for the lanes' last groups so that it can
  // run done itself (no hand-over to a sleeping thread); whoever claims
  // `done_claimed` first runs done.
  std::atomic<bool> submitter_waiting{false};
  std::atomic<bool> done_claimed{false};
  std::function<void(int)> done;
};

namespace {

constexpr size_t kMaxIov = 1024;  // IOV_MAX on Linux

// process_vm_writev of pieces [first, last) (all of one pid), in as few
// calls as the iovec limit allows; resumes after partial writes.
int write_other_process(const CopyPiece* first, const CopyPiece* last) {
  while (first != last) {
    size_t n = std::min<size_t>(static_cast<size_t>(last - first), kMaxIov);
    iovec local[kMaxIov];
    iovec remote[kMaxIov];
    size_t total = 0;
    for (size_t i = 0; i < n; ++i) {
      local[i] = {const_cast<void*>(first[i].src), first[i].len};
      remote[i] = {first[i].dst, first[i].len};
      total += first[i].len;
    }
    ssize_t w = process_vm_writev(first->pid, local, n, remote, n, 0);
    if (w < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    if (w == 0) return EFAULT;
    if (static_cast<size_t>(w) == total) {
      first += n;
      continue;
    }
    // A partial write stops at a piece boundary or inside one: finish the
    // piece it stopped in alone, then go on with the rest.
    size_t done = static_cast<size_t>(w);
    while (done >= first->len) {
      done -= first->len;
      ++first;
    }
    CopyPiece rest = *first;
    rest.dst = static_cast<char*>(rest.dst) + done;
    rest.src = static_cast<const char*>(rest.src) + done;
    rest.len -= done;
    int err = write_other_process(&rest, &rest + 1);
    if (err != 0) return err;
    ++first;
  }
  return 0;
}

void copy_group(CopyBatch& b, size_t g) {
  if (b.cancelled.load(std::memory_order_relaxed)) return;
  const CopyPiece* p = b.pieces.data() + (g == 0 ? 0 : b.group_end[g - 1]);
  const CopyPiece* end = b.pieces.data() + b.group_end[g];
  while (p != end) {
    if (p->pid == 0) {
      stream_copy(p->dst, p->src, p->len);
      ++p;
      continue;
    }
    const CopyPiece* run = p;
    while (run != end && run->pid == p->pid) ++run;
    int err = write_other_process(p, run);
    if (err != 0) {
      int none = 0;
      b.error.compare_exchange_strong(none, err);
      return;
    }
    p = run;
  }
}

void run_done(const std::shared_ptr<CopyBatch>& b) {
  if (b->done_claimed.exchange(true)) return;
  int err = b->error.load();
  if (err == 0 && b->cancelled.load()) err = ECANCELED;
  auto done = std::move(b->done);
  if (done) done(err);
}

void finish_group(const std::shared_ptr<CopyBatch>& b) {
  if (b->groups_left.fetch_sub(1) != 1) return;
  if (b->submitter_waiting.load()) return;  // it sees groups_left == 0 and runs done
  run_done(b);
}

}  // namespace

CopyLanes::CopyLanes(unsigned lanes) : lanes_(std::max(1u, lanes)) {
  for (unsigned i = 1; i < lanes_; ++i) helpers_.emplace_back([this] { lane_main(); });
}

CopyLanes::~CopyLanes() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
    for (auto& b : queue_) b->cancelled = true;
  }
  cv_.notify_all();
  for (auto& t : helpers_) t.join();
  // Whatever no helper claimed (none left, or lanes == 1) ends here.
  for (auto& b : queue_) help(b);
}

unsigned CopyLanes::choose(unsigned requested) {
  if (requested != 0) return requested;
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return static_cast<unsigned>(std::clamp<long>(cpus, 1, 8));
}

void CopyLanes::cancel(const std::shared_ptr<CopyBatch>& batch) {
  if (batch) batch->cancelled = true;
}

void CopyLanes::help(const std::shared_ptr<CopyBatch>& b) {
  const size_t groups = b->group_end.size();
  for (;;) {
    size_t g = b->next_group.fetch_add(1, std::memory_order_relaxed);
    if (g >= groups) return;
    copy_group(*b, g);
    finish_group(b);
  }
}

std::shared_ptr<CopyBatch> CopyLanes::run(std::vector<CopyPiece> pieces,
                                          std::function<void(int)> done) {
  auto b = std::make_shared<CopyBatch>();
  b->done = std::move(done);
  size_t total = 0;
  for (const CopyPiece& p : pieces) total += p.len;
  // Stripes: long pieces are cut so that every lane gets a share.
  const bool shared = lanes_ > 1 && total >= kMinShared;
  size_t stripe = kStripe;
  if (shared) stripe = std::max<size_t>(kMinShared / 4, std::min(kStripe, total / (4 * lanes_)));
  b->pieces.reserve(pieces.size());
  size_t group_bytes = 0;
  for (const CopyPiece& p : pieces) {
    size_t off = 0;
    while (off < p.len) {
      size_t len = p.len - off;
      if (shared && len > stripe + stripe / 2) len = stripe;
      CopyPiece part = p;
      part.dst = static_cast<char*>(p.dst) + off;
      part.src = static_cast<const char*>(p.src) + off;
      part.len = len;
      b->pieces.push_back(part);
      off += len;
      group_bytes += len;
      if (group_bytes >= stripe) {
        b->group_end.push_back(b->pieces.size());
        group_bytes = 0;
      }
    }
  }
  if (b->group_end.empty() || b->group_end.back() != b->pieces.size()) {
    b->group_end.push_back(b->pieces.size());
  }
  b->groups_left = b->group_end.size();
  if (b->pieces.empty()) {
    // One empty group: finishes at once.
    b->next_group = 1;
    finish_group(b);
    return b;
  }
  if (shared && b->group_end.size() > 1) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      queue_.push_back(b);
    }
    unsigned wake = std::min<size_t>(helpers_.size(), b->group_end.size() - 1);
    for (unsigned i = 0; i < wake; ++i) cv_.notify_one();
  }
  b->submitter_waiting = true;
  help(b);
  // The lanes hold at most one group each now: wait for them (about one
  // group's copy), spinning, then finish the batch here.
  auto until = std::chrono::steady_clock::now() + kSubmitterWait;
  spin_until([&] { return b->groups_left.load() == 0; }, until);
  b->submitter_waiting = false;
  if (b->groups_left.load() == 0) run_done(b);
  return b;
}

void CopyLanes::lane_main() {
  for (;;) {
    std::shared_ptr<CopyBatch> b;
    {
      std::unique_lock<std::mutex> lock(mu_);
      for (;;) {
        while (!queue_.empty() &&
               queue_.front()->next_group.load() >= queue_.front()->group_end.size()) {
          queue_.pop_front();  // fully claimed
        }
        if (!queue_.empty()) break;
        if (stop_) return;
        cv_.wait(lock);
      }
      b = queue_.front();
    }
    help(b);
  }
}

int read_other_process(pid_t pid, uint64_t remote, void* out, size_t len) {
  iovec local{out, len};
  iovec far{reinterpret_cast<void*>(remote), len};
  ssize_t r = process_vm_readv(pid, &local, 1, &far, 1, 0);
  if (r < 0) return errno;
  return static_cast<size_t>(r) == len ? 0 : EFAULT;
}

}  // namespace kvdist::mem
