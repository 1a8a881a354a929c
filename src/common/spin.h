// Waiting awake for something a few microseconds away. A thread that sleeps
// is woken tens of microseconds late on a virtual machine, and one that
// yields may lose its core for a scheduler time slice (milliseconds) to
// any other runnable thread: short waits on a completion path spin.
#ifndef KVDIST_COMMON_SPIN_H_
#define KVDIST_COMMON_SPIN_H_

#include <chrono>
#include <thread>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace kvdist {

// Spins until done() or `until`; true if done() became true.
template <typename Done>
bool spin_until(Done&& done, std::chrono::steady_clock::time_point until) {
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
#if defined(__x86_64__)
      _mm_pause();
#else
      std::this_thread::yield();
#endif
    }
    if (std::chrono::steady_clock::now() >= until) return done();
  }
}

}  // namespace kvdist

#endif  // KVDIST_COMMON_SPIN_H_
