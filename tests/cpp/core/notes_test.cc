#include "core/notes.h"

#include <gtest/gtest.h>

#include "kvdist/data_dist.h"

namespace kvdist::core {
namespace {

TEST(Notes, RoundTrip) {
  Note n;
  n.kind = Note::Kind::kAbort;
  n.task_id = 7;
  n.layer = 3;
  n.code = StatusCode::kTimeout;
  n.addrs = {1, 2, 0xFFFFFFFFFFFFull};
  Note out;
  ASSERT_TRUE(decode_note(encode_note(n), &out));
  EXPECT_EQ(out.kind, n.kind);
  EXPECT_EQ(out.task_id, 7u);
  EXPECT_EQ(out.layer, 3u);
  EXPECT_EQ(out.code, StatusCode::kTimeout);
  EXPECT_EQ(out.addrs, n.addrs);
}

TEST(Notes, MessageRoundTripAndOversizeRejected) {
  Note n;
  n.kind = Note::Kind::kMessage;
  n.payload = std::string("req-7\0blocks", 12);
  Note out;
  ASSERT_TRUE(decode_note(encode_note(n), &out));
  EXPECT_EQ(out.kind, Note::Kind::kMessage);
  EXPECT_EQ(out.payload, n.payload);
  n.payload.assign(kMaxPeerMessageBytes + 1, 'x');
  EXPECT_FALSE(decode_note(encode_note(n), &out));
  std::string bad = encode_note(Note{});
  bad[0] = 7;  // unknown kind
  EXPECT_FALSE(decode_note(bad, &out));
}

TEST(Notes, TruncatedOrPaddedIsRejected) {
  Note n;
  n.addrs = {1, 2};
  std::string bytes = encode_note(n);
  Note out;
  for (size_t len = 0; len < bytes.size(); ++len) {
    EXPECT_FALSE(decode_note(bytes.substr(0, len), &out)) << len;
  }
  EXPECT_FALSE(decode_note(bytes + "x", &out));
}

TEST(Notes, HugeCountIsRejectedWithoutAllocating) {
  std::string bytes = encode_note(Note{});
  // Overwrite the address count (before the empty payload's u32 length) with 2^32-1.
  bytes.replace(bytes.size() - 8, 4, std::string(4, '\xff'));
  Note out;
  EXPECT_FALSE(decode_note(bytes, &out));
}

}  // namespace
}  // namespace kvdist::core
