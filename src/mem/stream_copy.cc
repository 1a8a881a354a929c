#include "mem/stream_copy.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)
#include <emmintrin.h>
#endif

namespace kvdist::mem {
namespace {

// Below this a copy is a few cache lines and memcpy is as good. Paged caches
// write many block-sized copies (a 16-token Llama-3-8B block is 32 KiB):
// they are DRAM-bound as a whole, so they stream too.
constexpr size_t kStreamMin = 4 * 1024;

}  // namespace

void stream_copy(void* dst, const void* src, size_t len) {
#if defined(__x86_64__)
  if (len >= kStreamMin) {
    auto* d = static_cast<char*>(dst);
    const auto* s = static_cast<const char*>(src);
    // Align the destination to 16 bytes with an ordinary copy.
    size_t head = (16 - (reinterpret_cast<uintptr_t>(d) & 15)) & 15;
    std::memcpy(d, s, head);
    d += head;
    s += head;
    len -= head;
    size_t blocks = len / 64;
    for (size_t i = 0; i < blocks; ++i) {
      __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s));
      __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 16));
      __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 32));
      __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + 48));
      _mm_stream_si128(reinterpret_cast<__m128i*>(d), a);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + 16), b);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + 32), c);
      _mm_stream_si128(reinterpret_cast<__m128i*>(d + 48), e);
      d += 64;
      s += 64;
    }
    std::memcpy(d, s, len - blocks * 64);
    _mm_sfence();  // streaming stores are weakly ordered: publish them
    return;
  }
#endif
  std::memcpy(dst, src, len);
}

}  // namespace kvdist::mem
