#include "net/auth.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <cstdlib>

#include "common/bytes.h"

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
  std::string data = w.take();
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
           reinterpret_cast<const unsigned char*>(data.data()), data.size(), out,
           &len) == nullptr) {
    return {};
  }
  return std::string(reinterpret_cast<const char*>(out), len);
}

bool matches(std::string_view want, std::string_view got) {
  if (want.empty() || want.size() != got.size()) return false;
  return CRYPTO_memcmp(want.data(), got.data(), want.size()) == 0;
}

std::string secret_from_environment() {
  const char* s = std::getenv("KVDIST_AUTH_SECRET");
  return s == nullptr ? std::string() : std::string(s);
}

}  // namespace kvdist::net::auth
