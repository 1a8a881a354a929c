#include "core/inbox.h"

namespace kvdist::core {

bool Inbox::push(PeerMessage msg) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return false;
    if (queue_.size() >= kMaxQueued) {
      ++dropped_;
      return false;
    }
    queue_.push_back(std::move(msg));
  }
  cv_.notify_all();
  return true;
}

std::vector<PeerMessage> Inbox::take(size_t max, std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait_until(lock, deadline, [&] { return closed_ || !queue_.empty(); });
  std::vector<PeerMessage> out;
  while (!queue_.empty() && out.size() < max) {
    out.push_back(std::move(queue_.front()));
    queue_.pop_front();
  }
  return out;
}

uint64_t Inbox::dropped() const {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

void Inbox::close() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
  }
  cv_.notify_all();
}

}  // namespace kvdist::core
