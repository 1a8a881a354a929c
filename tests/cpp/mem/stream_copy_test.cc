#include "mem/stream_copy.h"

#include <gtest/gtest.h>

#include <cstring>
#include <vector>

namespace kvdist::mem {
namespace {

TEST(StreamCopy, CopiesEveryByteAtAnyAlignmentAndSize) {
  std::vector<char> src(3 << 20);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<char>(i * 131 + (i >> 9));
  for (size_t len : {size_t{0}, size_t{1}, size_t{63}, size_t{65536}, size_t{65537},
                     size_t{1 << 20}, size_t{(2 << 20) + 77}}) {
    for (size_t offset : {0, 1, 15, 16, 33}) {
      std::vector<char> dst(len + 64, 'x');
      stream_copy(dst.data() + offset, src.data() + 7, len);
      EXPECT_EQ(std::memcmp(dst.data() + offset, src.data() + 7, len), 0) << len << " " << offset;
      // Nothing written before or after.
      for (size_t i = 0; i < offset; ++i) ASSERT_EQ(dst[i], 'x');
      for (size_t i = offset + len; i < dst.size(); ++i) ASSERT_EQ(dst[i], 'x');
    }
  }
}

}  // namespace
}  // namespace kvdist::mem
