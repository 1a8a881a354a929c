#include "mem/region_table.h"

#include <gtest/gtest.h>

namespace kvdist::mem {
namespace {

TEST(RegionTable, FindsRangesOnlyInsideOneRegion) {
  RegionTable<int> t;
  ASSERT_TRUE(t.add(1, 1000, 100, 11));
  ASSERT_TRUE(t.add(2, 1100, 100, 22));
  ASSERT_NE(t.find(1000, 100), nullptr);
  EXPECT_EQ(t.find(1000, 100)->payload, 11);
  EXPECT_EQ(t.find(1150, 50)->payload, 22);
  EXPECT_EQ(t.find(1050, 100), nullptr);  // straddles two regions
  EXPECT_EQ(t.find(999, 2), nullptr);
  EXPECT_EQ(t.find(1199, 2), nullptr);
  EXPECT_EQ(t.find(5000, 1), nullptr);
}

TEST(RegionTable, RefusesOverlapWrapAndDuplicates) {
  RegionTable<int> t;
  ASSERT_TRUE(t.add(1, 1000, 100, 0));
  EXPECT_FALSE(t.add(2, 1099, 10, 0));
  EXPECT_FALSE(t.add(3, 990, 11, 0));
  EXPECT_FALSE(t.add(1, 5000, 10, 0));
  EXPECT_FALSE(t.add(4, UINT64_MAX - 5, 10, 0));
  EXPECT_FALSE(t.add(5, 7000, 0, 0));
  EXPECT_EQ(t.find(UINT64_MAX - 1, 10), nullptr);
}

TEST(RegionTable, RemovedRegionIsNoLongerFound) {
  RegionTable<int> t;
  ASSERT_TRUE(t.add(1, 1000, 100, 5));
  int payload = 0;
  EXPECT_TRUE(t.remove(1, &payload));
  EXPECT_EQ(payload, 5);
  EXPECT_EQ(t.find(1000, 1), nullptr);
  EXPECT_FALSE(t.remove(1));
}

}  // namespace
}  // namespace kvdist::mem
