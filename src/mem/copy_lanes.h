// Copy lanes: the threads that move one host's bytes. A batch of copies
// (one write: a layer's tensors or blocks, into one destination) is cut into
// groups of about a stripe each; the thread that submits it copies too, and
// idle lanes take the batch's remaining groups. Small batches are copied by
// the submitting thread alone (waking a lane costs more than it saves).
//
// A copy's destination is memory mapped in this process (a peer's shared
// memory; SSE2 streaming stores) or memory of another process on this host
// (the kernel's cross-process copy, process_vm_writev).
#ifndef KVDIST_MEM_COPY_LANES_H_
#define KVDIST_MEM_COPY_LANES_H_

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace kvdist::mem {

struct CopyPiece {
  void* dst = nullptr;  // in this process, or in process `pid`
  const void* src = nullptr;
  size_t len = 0;
  pid_t pid = 0;  // 0: dst is mapped here
};

struct CopyBatch;

class CopyLanes {
 public:
  // Pieces longer than this are split; groups are about this long.
  static constexpr size_t kStripe = size_t{1} << 20;
  // Batches shorter than this are copied by the submitting thread alone.
  static constexpr size_t kMinShared = size_t{512} << 10;
  // How long the submitter waits for the lanes' last groups before it
  // leaves done to the lane that finishes last (a stripe takes ~100 us).
  static constexpr std::chrono::microseconds kSubmitterWait{500};

  // `lanes` threads copy in all, the submitting thread included (so
  // lanes - 1 helper threads are started; 1: the submitter alone).
  explicit CopyLanes(unsigned lanes);
  ~CopyLanes();  // cancels what is queued, joins the helpers
  CopyLanes(const CopyLanes&) = delete;
  CopyLanes& operator=(const CopyLanes&) = delete;

  unsigned lanes() const { return lanes_; }

  // Copies the pieces; returns once every group has been claimed (the
  // calling thread copied some of them) and, unless they take longer than
  // kSubmitterWait, the lanes have finished theirs. done(error) runs exactly
  // once, when no copy of the batch runs or can start any more: inside run
  // on the calling thread, or on the lane that finished last: error is 0, the first
  // errno of a cross-process copy that failed, or ECANCELED after cancel().
  std::shared_ptr<CopyBatch> run(std::vector<CopyPiece> pieces, std::function<void(int)> done);

  // Copies not yet started are skipped. Thread-safe; done still runs.
  static void cancel(const std::shared_ptr<CopyBatch>& batch);

  // Number of lanes for `requested` (0: one per online CPU, at most 8).
  static unsigned choose(unsigned requested);

 private:
  void lane_main();
  // Copies groups of `batch` until none is left unclaimed.
  static void help(const std::shared_ptr<CopyBatch>& batch);

  const unsigned lanes_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<CopyBatch>> queue_;  // batches with unclaimed groups
  bool stop_ = false;
  std::vector<std::thread> helpers_;
};

// process_vm_readv of len bytes at `remote` in process pid; errno or 0.
int read_other_process(pid_t pid, uint64_t remote, void* out, size_t len);

}  // namespace kvdist::mem

#endif  // KVDIST_MEM_COPY_LANES_H_
