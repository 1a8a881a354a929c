#include "net/sha256.h"

#include <gtest/gtest.h>

#include <string>

#include "net/auth.h"

namespace kvdist::net {
namespace {

std::string hex(const Sha256::Digest& d) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (uint8_t b : d) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

// FIPS 180-4's examples.
TEST(Sha256, FipsVectors) {
  EXPECT_EQ(hex(Sha256::of("")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hex(Sha256::of("abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex(Sha256::of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  Sha256 million;
  const std::string thousand(1000, 'a');
  for (int i = 0; i < 1000; ++i) million.update(thousand);
  EXPECT_EQ(hex(million.finish()),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

// RFC 4231, test cases 1, 2 and 6 (a key longer than a block).
TEST(Sha256, HmacRfc4231) {
  EXPECT_EQ(hex(hmac_sha256(std::string(20, '\x0b'), "Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_EQ(hex(hmac_sha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  EXPECT_EQ(hex(hmac_sha256(std::string(131, '\xaa'),
                            "Test Using Larger Than Block-Size Key - Hash Key First")),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54");
}

// Padding at and around the block boundaries, fed whole and byte by byte
// (digests from Python's hashlib and hmac).
TEST(Sha256, BlockBoundariesAndSplitUpdates) {
  struct Case {
    size_t len;
    const char* sha;
    const char* hmac;
  };
  const Case cases[] = {
      {55, "e7313d333c272e639f790978283f9eb392e843d0f29b7016828bb1daa4aac70b",
       "645e7119658a49553bae77c1690d670b38b859635e99a2e5f7511fa7a96d228a"},
      {56, "4324d65f3c103567f5589c710bc08f8523f929a9272e3af36fc968e52abc6c27",
       "737b16ebabbd83ee1ddae7153dc1e38725158cd29d1c32d8cfd6c2f09a7d1833"},
      {63, "81c80242132f230c3bd41b3e63bbcff16107339549214a99614ff26664625055",
       "1ba42676d7edb14868f64621baa05168e7a5732d24509babba4a4254461e2129"},
      {64, "39e3d7b6b5d075d37d053ad89b24b41bef4f3c29760c84447cab3f3be1882241",
       "a2686e1ce498af287e6b1fdedefa959fd0b6afff6fc20b02718fe18aa1ac2180"},
      {65, "aacca6ff74fdbb296d165a45cecfa04e5127bc008770fbbdd48006f2d2fae95e",
       "58928db5c8cfaba786e370524bb0db6db1a7a9769603f6884bae15da8a57704d"},
      {119, "9ce7368e4daf32341631b492e80359dc9f594b48453cd0dd5bf0b19279cc177e",
       "86412daa48e81f6649e4fdb4e8f6af67f39b605b3bd27244474d21666d422e7e"},
      {120, "7836b787757e95e58b3ca5aec90b1b004e8deba1e50e9675af9cabf1a13a04b5",
       "b00ede067b57ebd5bca0e31b13f41787b18fe75bc30d68c87819bdd9cb8a707f"},
      {128, "d2742f1f4ac6bb7ca2b239ee18402ba8b3f9f8e652d2a72973c2b9ba11c08cf6",
       "60c627224e53b2152ba7411005ce3506e3ac9a13ba583dc6ffab7c88768e8dd3"},
  };
  std::string key;
  for (int i = 0; i < 70; ++i) key += static_cast<char>(i);
  for (const Case& c : cases) {
    std::string data;
    for (size_t i = 0; i < c.len; ++i) data += static_cast<char>((i * 7 + 3) % 256);
    EXPECT_EQ(hex(Sha256::of(data)), c.sha) << c.len;
    Sha256 split;
    for (char ch : data) split.update(std::string_view(&ch, 1));
    EXPECT_EQ(hex(split.finish()), c.sha) << c.len;
    EXPECT_EQ(hex(hmac_sha256(key, data)), c.hmac) << c.len;
  }
}

TEST(Auth, ProofsBindTheirFieldsAndCompareExactly) {
  const std::string p = auth::proof("secret", auth::Role::kClient, "n1", "n2", 1, 2, "addr");
  ASSERT_EQ(p.size(), 32u);
  EXPECT_TRUE(auth::matches(p, p));
  EXPECT_FALSE(
      auth::matches(p, auth::proof("secret", auth::Role::kServer, "n1", "n2", 1, 2, "addr")));
  EXPECT_FALSE(
      auth::matches(p, auth::proof("secret", auth::Role::kClient, "n1", "n3", 1, 2, "addr")));
  EXPECT_FALSE(
      auth::matches(p, auth::proof("other", auth::Role::kClient, "n1", "n2", 1, 2, "addr")));
  std::string flipped = p;
  flipped[31] = static_cast<char>(flipped[31] ^ 1);
  EXPECT_FALSE(auth::matches(p, flipped));
  EXPECT_FALSE(auth::matches(p, p.substr(0, 31)));
  EXPECT_FALSE(auth::matches("", ""));
  EXPECT_TRUE(auth::proof("", auth::Role::kClient, "n1", "n2", 1, 2, "addr").empty());
}

}  // namespace
}  // namespace kvdist::net
