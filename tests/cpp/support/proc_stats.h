// What a process holds: resident memory (/proc/self/statm) and open file
// descriptors (/proc/self/fd), for the leak checks of the load and
// hostile-input tests. Also whether this build runs under a sanitizer (its
// allocator keeps freed memory in quarantine, so RSS says nothing there).
#ifndef KVDIST_TESTS_SUPPORT_PROC_STATS_H_
#define KVDIST_TESTS_SUPPORT_PROC_STATS_H_

#include <dirent.h>
#include <unistd.h>

#include <cstdint>
#include <fstream>

namespace kvdist::testing {

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
inline constexpr bool kSanitized = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif
#else
inline constexpr bool kSanitized = false;
#endif

inline uint64_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  uint64_t size = 0;
  uint64_t resident = 0;
  statm >> size >> resident;
  return resident * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
}

// Open descriptors, not counting the one used to list them.
inline int open_fds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n - 1;
}

}  // namespace kvdist::testing

#endif  // KVDIST_TESTS_SUPPORT_PROC_STATS_H_
