#include "mem/range_allocator.h"

#include <gtest/gtest.h>

namespace kvdist::mem {
namespace {

TEST(RangeAllocator, AlignsAndFitsFirst) {
  RangeAllocator a(4096, 64);
  auto x = a.allocate(10);
  auto y = a.allocate(100);
  ASSERT_TRUE(x && y);
  EXPECT_EQ(*x, 0u);
  EXPECT_EQ(*y, 64u);
  EXPECT_EQ(a.used(), 64u + 128u);
}

TEST(RangeAllocator, RefusesWhatDoesNotFit) {
  RangeAllocator a(256, 64);
  EXPECT_TRUE(a.allocate(256));
  EXPECT_FALSE(a.allocate(1));
  EXPECT_FALSE(RangeAllocator(256, 64).allocate(257));
}

TEST(RangeAllocator, FreedNeighboursCoalesce) {
  RangeAllocator a(256, 64);
  auto p = a.allocate(64);
  auto q = a.allocate(64);
  auto r = a.allocate(128);
  ASSERT_TRUE(p && q && r);
  EXPECT_TRUE(a.free(*q));
  EXPECT_TRUE(a.free(*p));
  EXPECT_TRUE(a.free(*r));
  EXPECT_EQ(a.used(), 0u);
  auto all = a.allocate(256);
  ASSERT_TRUE(all);
  EXPECT_EQ(*all, 0u);
}

TEST(RangeAllocator, UnknownOffsetIsNotFreed) {
  RangeAllocator a(256, 64);
  auto p = a.allocate(64);
  EXPECT_FALSE(a.free(*p + 1));
  EXPECT_TRUE(a.free(*p));
  EXPECT_FALSE(a.free(*p));
}

}  // namespace
}  // namespace kvdist::mem
