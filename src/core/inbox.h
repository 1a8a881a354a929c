// Messages that linked peers sent to this DataDist, waiting to be received.
// Bounded: a peer that floods, or a receiver that never reads, cannot make
// it grow past kMaxQueued messages; the excess is dropped and counted.
#ifndef KVDIST_CORE_INBOX_H_
#define KVDIST_CORE_INBOX_H_

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <vector>

#include "kvdist/data_dist.h"

namespace kvdist::core {

class Inbox {
 public:
  static constexpr size_t kMaxQueued = 4096;

  // False (and the message dropped) when kMaxQueued are waiting.
  bool push(PeerMessage msg);
  // Up to `max` messages in arrival order; waits until `deadline` for the
  // first one when none is waiting.
  std::vector<PeerMessage> take(size_t max, std::chrono::steady_clock::time_point deadline);
  uint64_t dropped() const;
  // Wakes waiters; later takes return at once.
  void close();

 private:
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<PeerMessage> queue_;
  uint64_t dropped_ = 0;
  bool closed_ = false;
};

}  // namespace kvdist::core

#endif  // KVDIST_CORE_INBOX_H_
