// Proof of a shared secret in the link handshake: HMAC-SHA256 (net/sha256.h)
// over a role label, both sides' nonces, both cluster ids and the
// prover's UCX worker address, so a proof is good for one handshake, one
// direction and one data endpoint only. Comparison in constant time.
#ifndef KVDIST_NET_AUTH_H_
#define KVDIST_NET_AUTH_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace kvdist::net::auth {

inline constexpr size_t kNonceBytes = 16;

// Who proves: the linking side (client) or the listener (server).
enum class Role { kClient, kServer };

// kNonceBytes from the kernel's generator; empty if it failed.
std::string random_nonce();

// The proof `role` sends. Empty secret: empty proof.
std::string proof(std::string_view secret, Role role, std::string_view client_nonce,
                  std::string_view server_nonce, uint64_t client_cluster, uint64_t server_cluster,
                  std::string_view worker_address);

// Whether `got` is the proof `want` (never true for an empty `want`).
bool matches(std::string_view want, std::string_view got);

// The secret of the environment (KVDIST_AUTH_SECRET), or empty.
std::string secret_from_environment();

}  // namespace kvdist::net::auth

#endif  // KVDIST_NET_AUTH_H_
