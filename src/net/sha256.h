// SHA-256 (FIPS 180-4) and HMAC-SHA256 (RFC 2104), for the link handshake's
// proofs (net/auth.h). Written here so that kvdist builds from PyPI
// requirements alone (no OpenSSL headers); checked against the FIPS and
// RFC 4231 test vectors (tests/cpp/net/sha256_test.cc).
#ifndef KVDIST_NET_SHA256_H_
#define KVDIST_NET_SHA256_H_

#include <array>
#include <cstdint>
#include <string_view>

namespace kvdist::net {

class Sha256 {
 public:
  static constexpr size_t kDigestBytes = 32;
  static constexpr size_t kBlockBytes = 64;
  using Digest = std::array<uint8_t, kDigestBytes>;

  Sha256();
  void update(std::string_view data);
  Digest finish();  // the object is spent afterwards

  static Digest of(std::string_view data);

 private:
  void block(const uint8_t* p);

  std::array<uint32_t, 8> h_;
  std::array<uint8_t, kBlockBytes> buf_{};
  size_t buffered_ = 0;
  uint64_t total_ = 0;  // bytes
};

// HMAC-SHA256 of `data` under `key`.
Sha256::Digest hmac_sha256(std::string_view key, std::string_view data);

}  // namespace kvdist::net

#endif  // KVDIST_NET_SHA256_H_
