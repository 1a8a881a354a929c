#include "net/wire.h"

#include <gtest/gtest.h>

#include <random>

namespace kvdist::net {
namespace {

// The largest handshake message: the listener's answer.
Message sample_hello() {
  Message m;
  m.type = MsgType::kHelloAck;
  m.cluster_id = 2;
  m.expected_cluster_id = 1;
  m.host_id = "host/boot";
  m.proof = std::string(32, '\x5a');
  m.worker_address = std::string("\x01\x02\x00\x03", 4);
  m.regions.push_back({7, 0x1000, 0x2000, "rkey-bytes"});
  return m;
}

TEST(Wire, HelloRoundTrips) {
  Message out;
  ASSERT_TRUE(decode(encode(sample_hello()), &out));
  EXPECT_EQ(out.type, MsgType::kHelloAck);
  EXPECT_EQ(out.cluster_id, 2u);
  EXPECT_EQ(out.expected_cluster_id, 1u);
  EXPECT_EQ(out.proof, std::string(32, '\x5a'));
  EXPECT_EQ(out.worker_address, std::string("\x01\x02\x00\x03", 4));
  ASSERT_EQ(out.regions.size(), 1u);
  EXPECT_EQ(out.regions[0].base, 0x1000u);
  EXPECT_EQ(out.regions[0].rkey, "rkey-bytes");
}

TEST(Wire, HandshakeMessagesRoundTrip) {
  Message hello;
  hello.type = MsgType::kHello;
  hello.cluster_id = 7;
  hello.expected_cluster_id = 1;
  hello.host_id = "h";
  hello.nonce = std::string(16, '\x01');
  hello.value = kHelloHasSecret;
  Message out;
  ASSERT_TRUE(decode(encode(hello), &out));
  EXPECT_EQ(out.nonce, hello.nonce);
  EXPECT_EQ(out.value, kHelloHasSecret);
  EXPECT_TRUE(out.worker_address.empty());  // no address before the proofs

  Message challenge;
  challenge.type = MsgType::kChallenge;
  challenge.nonce = std::string(16, '\x02');
  ASSERT_TRUE(decode(encode(challenge), &out));
  EXPECT_EQ(out.nonce, challenge.nonce);

  Message auth;
  auth.type = MsgType::kAuth;
  auth.proof = std::string(32, '\x03');
  auth.worker_address = "addr";
  auth.regions.push_back({1, 0x1000, 64, "k"});
  ASSERT_TRUE(decode(encode(auth), &out));
  EXPECT_EQ(out.proof, auth.proof);
  EXPECT_EQ(out.worker_address, "addr");
  ASSERT_EQ(out.regions.size(), 1u);

  // Oversized nonce or proof: refused.
  challenge.nonce = std::string(kMaxNonceBytes + 1, 'x');
  EXPECT_FALSE(decode(encode(challenge), &out));
  auth.proof = std::string(kMaxProofBytes + 1, 'x');
  EXPECT_FALSE(decode(encode(auth), &out));
}

TEST(Wire, DataHeaderRoundTripsAndRejectsWhatNoSenderWrites) {
  DataHeader h;
  h.write_id = 42;
  h.index = 1;
  h.count = 3;
  h.region_id = 9;
  h.ranges = {{0x1000, 64}, {0x2000, 128}};
  h.note = "layer 3";
  std::string bytes = encode_data_header(h);
  DataHeader out;
  ASSERT_TRUE(decode_data_header(bytes, &out));
  EXPECT_EQ(out.write_id, 42u);
  EXPECT_EQ(out.index, 1u);
  EXPECT_EQ(out.count, 3u);
  EXPECT_EQ(out.region_id, 9u);
  EXPECT_EQ(out.ranges, h.ranges);
  EXPECT_EQ(out.note, "layer 3");
  for (size_t len = 0; len < bytes.size(); ++len) {
    EXPECT_FALSE(decode_data_header(bytes.substr(0, len), &out)) << len;
  }
  EXPECT_FALSE(decode_data_header(bytes + 'x', &out));
  auto bad = [&](auto mutate) {
    DataHeader m = h;
    mutate(m);
    return !decode_data_header(encode_data_header(m), &out);
  };
  EXPECT_TRUE(bad([](DataHeader& m) { m.index = m.count; }));
  EXPECT_TRUE(bad([](DataHeader& m) { m.count = 0; }));
  EXPECT_TRUE(bad([](DataHeader& m) { m.ranges.clear(); }));
  EXPECT_TRUE(bad([](DataHeader& m) { m.ranges[0].second = 0; }));
  EXPECT_TRUE(bad([](DataHeader& m) { m.ranges[1] = {UINT64_MAX - 10, 100}; }));
  EXPECT_TRUE(bad([](DataHeader& m) { m.ranges.assign(kMaxDataRanges + 1, {0x1000, 1}); }));
  EXPECT_TRUE(bad([](DataHeader& m) { m.note.assign(kMaxDataNoteBytes + 1, 'n'); }));
}

TEST(Wire, EveryTruncationIsRejected) {
  std::string bytes = encode(sample_hello());
  Message out;
  for (size_t len = 0; len < bytes.size(); ++len) {
    EXPECT_FALSE(decode(bytes.substr(0, len), &out)) << "length " << len;
  }
  EXPECT_FALSE(decode(bytes + '\0', &out));
}

TEST(Wire, WrongMagicVersionOrTypeIsRejected) {
  std::string bytes = encode(sample_hello());
  Message out;
  std::string bad_magic = bytes;
  bad_magic[0] ^= 1;
  EXPECT_FALSE(decode(bad_magic, &out));
  std::string bad_version = bytes;
  bad_version[4] = static_cast<char>(kWireVersion + 1);
  EXPECT_FALSE(decode(bad_version, &out));
  std::string bad_type = bytes;
  bad_type[8] = 99;
  EXPECT_FALSE(decode(bad_type, &out));
}

TEST(Wire, EmptyOrWrappingRegionIsRejected) {
  Message m;
  m.type = MsgType::kRegionAdd;
  m.regions.push_back({1, UINT64_MAX - 10, 100, "k"});
  Message out;
  EXPECT_FALSE(decode(encode(m), &out));
  m.regions[0] = {1, 100, 0, "k"};
  EXPECT_FALSE(decode(encode(m), &out));
}

TEST(Wire, RandomBytesNeverCrashAndRarelyDecode) {
  std::mt19937_64 rng(12345);
  std::string valid = encode(sample_hello());
  Message out;
  int decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    std::string bytes = valid;
    // Flip a few random bytes, or cut, or append noise.
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f) bytes[rng() % bytes.size()] = static_cast<char>(rng());
    if (rng() % 3 == 0) bytes.resize(rng() % bytes.size());
    decoded += decode(bytes, &out) ? 1 : 0;
  }
  // Flips inside free-form fields (host id, rkey bytes) still decode; the
  // point is that nothing crashes and structure errors are caught.
  EXPECT_LT(decoded, 20000);
}

}  // namespace
}  // namespace kvdist::net
