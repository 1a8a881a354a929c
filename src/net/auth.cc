#include "net/auth.h"

#include <sys/random.h>

#include <cstdlib>

#include "common/bytes.h"
#include "net/sha256.h"

namespace kvdist::net::auth {

std::string random_nonce() {
  std::string nonce(kNonceBytes, '\0');
  if (getrandom(nonce.data(), nonce.size(), 0) != static_cast<ssize_t>(nonce.size())) return {};
  return nonce;
}

std::string proof(std::string_view secret, Role role, std::string_view client_nonce,
                  std::string_view server_nonce, uint64_t client_cluster, uint64_t server_cluster,
                  std::string_view worker_address) {
  if (secret.empty()) return {};
  // Length-prefixed fields: no two different inputs serialize alike.
  ByteWriter w;
  w.bytes(role == Role::kClient ? "kvdist link proof v1: client" : "kvdist link proof v1: server");
  w.bytes(client_nonce);
  w.bytes(server_nonce);
  w.u64(client_cluster);
  w.u64(server_cluster);
  w.bytes(worker_address);
  const Sha256::Digest mac = hmac_sha256(secret, w.take());
  return std::string(reinterpret_cast<const char*>(mac.data()), mac.size());
}

bool matches(std::string_view want, std::string_view got) {
  if (want.empty() || want.size() != got.size()) return false;
  // Constant time: every byte is looked at, whatever differs.
  volatile uint8_t diff = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    diff =
        static_cast<uint8_t>(diff | (static_cast<uint8_t>(want[i]) ^ static_cast<uint8_t>(got[i])));
  }
  return diff == 0;
}

std::string secret_from_environment() {
  const char* s = std::getenv("KVDIST_AUTH_SECRET");
  return s == nullptr ? std::string() : std::string(s);
}

}  // namespace kvdist::net::auth
