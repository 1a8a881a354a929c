// Helpers shared by the tests and their peer process: a byte pattern that
// differs per position and seed, and a hash to compare memory across
// processes without shipping it.
#ifndef KVDIST_TESTS_SUPPORT_BYTES_HASH_H_
#define KVDIST_TESTS_SUPPORT_BYTES_HASH_H_

#include <cstdint>
#include <cstring>

namespace kvdist::testing {

inline uint64_t fnv1a(const void* data, uint64_t len) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 1469598103934665603ull;
  for (uint64_t i = 0; i < len; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

inline void fill_pattern(void* data, uint64_t len, uint64_t seed) {
  auto* p = static_cast<unsigned char*>(data);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (uint64_t i = 0; i < len; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = static_cast<unsigned char>(x);
  }
}

}  // namespace kvdist::testing

#endif  // KVDIST_TESTS_SUPPORT_BYTES_HASH_H_
