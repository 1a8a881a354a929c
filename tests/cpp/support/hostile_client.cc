// kvdist_hostile_client: connects to a kvdist listener with raw UCX, the way
// a kvdist client does (ucp_ep_create by sockaddr with peer error handling,
// control messages as active messages with id 1), and sends what a
// well-behaved client never would: random bytes, truncated, mutated and
// oversized (> 1 MiB) handshakes, wrong protocol versions and magics, the
// wrong expected cluster id, control messages before the handshake, and
// after an accepted handshake a stream of control messages ending in a
// malformed one, with data messages of the active-message path among them
// (random headers, ranges anywhere, lengths that do not match, eager and
// rendezvous). It speaks the handshake (hello, challenge, auth) and,
// against a listener with a shared secret, sends proofs that are wrong,
// empty or replayed from another handshake. Everything comes from one
// seeded generator.
//
//   kvdist_hostile_client <ip> <port> <expected_cluster> <seed> <messages>
//       [--victim <cluster>]   also claim to be <cluster> (a linked peer)
//                              with a wrong expected id or a garbage
//                              worker address: both must be refused
//       [--secret <s>]         know the listener's secret (its accepted
//                              handshakes then pass); without it, a
//                              listener with a secret must refuse them all
//
// Prints one line: sent=<n> connections=<n> nacks=<n> acks=<n>
// ep_errors=<n> send_errors=<n> oversized=<n> data=<n>; exits 0 once every message
// was handed to UCX (whatever the listener did with it), 1 on a local error.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <random>
#include <string>
#include <vector>

#include "net/auth.h"
#include "net/wire.h"

namespace {

using kvdist::net::Message;
using kvdist::net::MsgType;
using Clock = std::chrono::steady_clock;

constexpr uint16_t kAmControl = 1;
constexpr uint16_t kAmData = 2;

struct Counters {
  long sent = 0;
  long connections = 0;
  long nacks = 0;
  long acks = 0;
  long ep_errors = 0;
  long send_errors = 0;
  long oversized = 0;
  long data = 0;
};

Counters counters;
bool ep_failed = false;
bool got_nack = false;
bool got_ack = false;
bool got_challenge = false;
std::string challenge_nonce;
int pending_sends = 0;

ucs_status_t on_am(void*, const void*, size_t, void* data, size_t length,
                   const ucp_am_recv_param_t*) {
  Message m;
  if (kvdist::net::decode(std::string_view(static_cast<const char*>(data), length), &m)) {
    if (m.type == MsgType::kHelloNack) {
      got_nack = true;
      ++counters.nacks;
    } else if (m.type == MsgType::kHelloAck) {
      got_ack = true;
      ++counters.acks;
    } else if (m.type == MsgType::kChallenge) {
      got_challenge = true;
      challenge_nonce = m.nonce;
    }
  }
  return UCS_OK;
}

void on_ep_error(void*, ucp_ep_h, ucs_status_t) {
  if (!ep_failed) ++counters.ep_errors;
  ep_failed = true;
}

void on_sent(void* request, ucs_status_t status, void*) {
  if (status != UCS_OK) ++counters.send_errors;
  --pending_sends;
  ucp_request_free(request);
}

class Client {
 public:
  Client(const char* ip, uint16_t port, uint64_t expected, uint64_t seed, std::string secret)
      : expected_(expected), rng_(seed), secret_(std::move(secret)) {
    addr_.sin_family = AF_INET;
    addr_.sin_port = htons(port);
    inet_pton(AF_INET, ip, &addr_.sin_addr);
  }

  bool start() {
    ucp_config_t* config = nullptr;
    if (ucp_config_read(nullptr, nullptr, &config) != UCS_OK) return false;
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_AM | UCP_FEATURE_RMA;
    ucs_status_t s = ucp_init(&params, config, &context_);
    ucp_config_release(config);
    if (s != UCS_OK) return false;
    ucp_worker_params_t wp{};
    wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    wp.thread_mode = UCS_THREAD_MODE_SINGLE;
    if (ucp_worker_create(context_, &wp, &worker_) != UCS_OK) return false;
    ucp_am_handler_param_t am{};
    am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB;
    am.id = kAmControl;
    am.cb = on_am;
    if (ucp_worker_set_am_recv_handler(worker_, &am) != UCS_OK) return false;
    ucp_worker_attr_t attr{};
    attr.field_mask = UCP_WORKER_ATTR_FIELD_ADDRESS;
    if (ucp_worker_query(worker_, &attr) != UCS_OK) return false;
    my_address_.assign(reinterpret_cast<const char*>(attr.address), attr.address_length);
    ucp_worker_release_address(worker_, attr.address);
    return true;
  }

  ~Client() {
    if (worker_ != nullptr) ucp_worker_destroy(worker_);
    if (context_ != nullptr) ucp_cleanup(context_);
  }

  // One connection; the scenario is drawn from the generator.
  bool connection(long budget, long victim) {
    if (!connect()) return false;
    ++counters.connections;
    int scenario = static_cast<int>(pick(100));
    if (victim >= 0 && scenario < 4) {
      // Claim to be the victim: with the wrong expected id, or the right one
      // and a worker address nobody could reach.
      Message h = hello(static_cast<uint64_t>(victim));
      if (scenario < 2) {
        h.expected_cluster_id = expected_ + 1 + pick(1000);
        send(kvdist::net::encode(h));
      } else if (challenged(h)) {
        // Random bytes that are not a UCX 1.13 address (its version nibble
        // is 0 or 1); a crafted address is UCX's parser's surface, not ours.
        std::string address = random_bytes(pick(64) + 1);
        address[0] = static_cast<char>((pick(16) << 4) | (2 + pick(14)));
        send(auth(h, address, proof_for(h, address)));
      }
      settle(std::chrono::milliseconds(500), [] { return got_nack || ep_failed; });
    } else if (scenario < 30) {
      // An accepted handshake, then control messages, the last one malformed.
      Message h = hello(10000 + static_cast<uint64_t>(counters.connections));
      if (challenged(h)) {
        send(auth(h, my_address_, proof_for(h, my_address_)));
        settle(std::chrono::milliseconds(2000), [] { return got_ack || got_nack || ep_failed; });
      }
      long n = std::min<long>(budget - 1, 1 + static_cast<long>(pick(40)));
      for (long i = 0; i < n && !ep_failed; ++i) {
        if (pick(4) == 0) {
          send_data();
        } else {
          send(control_message());
        }
      }
      send(malformed());
      settle(std::chrono::milliseconds(1000), [] { return ep_failed; });
    } else if (scenario < 40) {
      // Proofs that must not pass a listener with a secret: random, empty,
      // or the right secret over another handshake's nonce (a replay).
      Message h = hello(40000 + pick(1000));
      // Claims to have no secret, or to have one.
      h.value = scenario < 34 ? 0 : kvdist::net::kHelloHasSecret;
      if (challenged(h)) {
        std::string proof;
        int kind = static_cast<int>(pick(3));
        if (kind == 0) proof = random_bytes(32);
        if (kind == 2) {
          std::string stale = kvdist::net::auth::random_nonce();
          proof = kvdist::net::auth::proof(secret_, kvdist::net::auth::Role::kClient, h.nonce,
                                           stale, h.cluster_id, expected_, my_address_);
        }
        send(auth(h, my_address_, proof));
        settle(std::chrono::milliseconds(1000), [] { return got_ack || got_nack || ep_failed; });
      }
    } else if ((scenario < 41 || counters.connections % 50 == 2) && counters.oversized < 8) {
      // Over the protocol's 1 MiB limit: a hello with a huge host id.
      Message h = hello(20000);
      h.host_id = std::string((size_t{1} << 20) + pick(4096), 'x');
      ++counters.oversized;
      send(kvdist::net::encode(h));
      settle(std::chrono::milliseconds(2000), [] { return got_nack || ep_failed; });
    } else {
      // Garbage where the handshake should be, several messages in a row.
      long n = std::min<long>(budget, 1 + static_cast<long>(pick(40)));
      for (long i = 0; i < n; ++i) send(malformed());
      settle(std::chrono::milliseconds(1000), [] { return got_nack || ep_failed; });
    }
    close();
    return true;
  }

 private:
  uint64_t pick(uint64_t n) { return std::uniform_int_distribution<uint64_t>(0, n - 1)(rng_); }

  std::string random_bytes(size_t n) {
    std::string s(n, '\0');
    for (char& c : s) c = static_cast<char>(pick(256));
    return s;
  }

  Message hello(uint64_t me) {
    Message h;
    h.type = MsgType::kHello;
    h.cluster_id = me;
    h.expected_cluster_id = expected_;
    h.host_id = "hostile/" + std::to_string(pick(1000));
    h.nonce = random_bytes(kvdist::net::auth::kNonceBytes);
    h.value = secret_.empty() ? 0 : kvdist::net::kHelloHasSecret;
    return h;
  }

  // Sends the hello; true once the listener answered with a challenge.
  bool challenged(const Message& h) {
    send(kvdist::net::encode(h));
    settle(std::chrono::milliseconds(1000), [] { return got_challenge || got_nack || ep_failed; });
    return got_challenge;
  }

  std::string proof_for(const Message& h, const std::string& address) {
    return kvdist::net::auth::proof(secret_, kvdist::net::auth::Role::kClient, h.nonce,
                                    challenge_nonce, h.cluster_id, expected_, address);
  }

  std::string auth(const Message& h, const std::string& address, const std::string& proof) {
    Message a;
    a.type = MsgType::kAuth;
    a.proof = proof;
    a.worker_address = address;
    return kvdist::net::encode(a);
  }

  std::string put_u32(uint32_t v) { return std::string(reinterpret_cast<const char*>(&v), 4); }

  // Never a valid first message that the listener would accept.
  std::string malformed() {
    Message h = hello(30000 + pick(1000));
    h.expected_cluster_id = expected_ + 1 + pick(1000);  // even if it decodes
    std::string valid = kvdist::net::encode(h);
    std::string out;
    switch (pick(11)) {
      case 0:
        return random_bytes(pick(65));
      case 1:
        return random_bytes(pick(2049));
      case 2:  // right magic and version, any type, random body
        return put_u32(kvdist::net::kWireMagic) + put_u32(kvdist::net::kWireVersion) +
               random_bytes(1 + pick(64));
      case 3:  // truncated
        return valid.substr(0, pick(valid.size()));
      case 4:  // bytes flipped
        out = valid;
        for (uint64_t i = 0, n = 1 + pick(8); i < n; ++i) {
          out[pick(out.size())] = static_cast<char>(pick(256));
        }
        return out;
      case 5:  // trailing bytes
        return valid + random_bytes(1 + pick(16));
      case 6: {  // a version we do not speak
        out = valid;
        uint32_t v = kvdist::net::kWireVersion + 1 + static_cast<uint32_t>(pick(1000));
        std::memcpy(out.data() + 4, &v, 4);
        return out;
      }
      case 7:  // wrong magic
        out = valid;
        out[pick(4)] ^= static_cast<char>(1 + pick(255));
        return out;
      case 8:  // decodes, but expects another cluster
        return valid;
      case 9: {  // a length prefix or region count far past the end
        out = put_u32(kvdist::net::kWireMagic) + put_u32(kvdist::net::kWireVersion);
        out += static_cast<char>(MsgType::kHello);
        out += random_bytes(16);
        out += put_u32(0xFFFFFFF0u - static_cast<uint32_t>(pick(1000)));
        return out + random_bytes(pick(32));
      }
      default: {  // a valid message of another type where a hello belongs
        Message m;
        m.type = static_cast<MsgType>(2 + pick(13));
        m.value = pick(1000);
        m.text = random_bytes(pick(64));
        if (m.type == MsgType::kRegionAdd) m.type = MsgType::kRegionDel;
        if (m.type == MsgType::kHelloAck) m.worker_address = random_bytes(16);
        return kvdist::net::encode(m);
      }
    }
  }

  // After an accepted handshake: messages a peer may send, with values
  // nobody asked for (unknown region ids, unsolicited pongs, notes that
  // are not notes), plus malformed ones now and then.
  std::string control_message() {
    Message m;
    switch (pick(8)) {
      case 0:
        m.type = MsgType::kPing;
        break;
      case 1:
        m.type = MsgType::kPong;
        break;
      case 2:
        m.type = MsgType::kRegionDel;
        break;
      case 3:
        m.type = MsgType::kRegionDelAck;
        break;
      case 4:
      case 5:
        m.type = MsgType::kNote;
        m.text = random_bytes(pick(200));
        break;
      case 6:
        m.type = MsgType::kHelloNack;
        m.code = static_cast<int64_t>(pick(1000));
        m.text = random_bytes(pick(32));
        break;
      default:
        return malformed();
    }
    m.value = pick(1u << 20);
    return kvdist::net::encode(m);
  }

  // A data message: a header that is garbage or well-formed with ranges
  // nobody exposed (random addresses, region ids, lengths that may not match
  // the payload), eager or rendezvous. The listener must write none of it.
  void send_data() {
    ++counters.sent;
    ++counters.data;
    if (ep_failed) {
      ++counters.send_errors;
      return;
    }
    size_t payload = pick(2) == 0 ? 1 + pick(4096) : 65536;
    std::string header;
    if (pick(3) == 0) {
      header = random_bytes(1 + pick(200));
    } else {
      kvdist::net::DataHeader h;
      h.write_id = pick(1000);
      h.count = static_cast<uint32_t>(1 + pick(3));
      h.index = static_cast<uint32_t>(pick(h.count));
      h.region_id = pick(64);
      uint64_t left = payload;
      while (left > 0) {
        uint64_t len = std::min<uint64_t>(left, 1 + pick(payload));
        uint64_t addr = pick(2) == 0 ? pick(uint64_t{1} << 47) : 4096 * (1 + pick(1u << 20));
        h.ranges.emplace_back(addr, len);
        left -= len;
        if (h.ranges.size() == kvdist::net::kMaxDataRanges) break;
      }
      if (pick(8) == 0) h.ranges[0].second += 1 + pick(100);  // longer than the payload
      header = kvdist::net::encode_data_header(h);
    }
    buffers_.push_back(std::move(header));
    const std::string& hb = buffers_.back();
    buffers_.push_back(random_bytes(payload));
    const std::string& pb = buffers_.back();
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_FLAGS;
    p.cb.send = on_sent;
    p.flags = UCP_AM_SEND_FLAG_REPLY | (payload > 4096 ? UCP_AM_SEND_FLAG_RNDV : 0);
    ucs_status_ptr_t req =
        ucp_am_send_nbx(ep_, kAmData, hb.data(), hb.size(), pb.data(), pb.size(), &p);
    if (UCS_PTR_IS_ERR(req)) {
      ++counters.send_errors;
    } else if (req != nullptr) {
      ++pending_sends;
    }
  }

  bool connect() {
    ep_failed = false;
    got_nack = false;
    got_ack = false;
    got_challenge = false;
    challenge_nonce.clear();
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                   UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    p.sockaddr.addr = reinterpret_cast<const sockaddr*>(&addr_);
    p.sockaddr.addrlen = sizeof(addr_);
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = on_ep_error;
    return ucp_ep_create(worker_, &p, &ep_) == UCS_OK;
  }

  void send(std::string bytes) {
    ++counters.sent;
    if (ep_failed) {
      ++counters.send_errors;
      return;
    }
    buffers_.push_back(std::move(bytes));
    const std::string& b = buffers_.back();
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_FLAGS;
    p.cb.send = on_sent;
    p.flags = UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_EAGER;
    ucs_status_ptr_t req = ucp_am_send_nbx(ep_, kAmControl, nullptr, 0, b.data(), b.size(), &p);
    if (UCS_PTR_IS_ERR(req)) {
      ++counters.send_errors;
    } else if (req != nullptr) {
      ++pending_sends;
    }
  }

  template <typename Done>
  void settle(std::chrono::milliseconds limit, Done done) {
    auto end = Clock::now() + limit;
    while (Clock::now() < end && (pending_sends > 0 || !done())) ucp_worker_progress(worker_);
  }

  void close() {
    // Sends still pending when the deadline passed are cancelled by the close.
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    p.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t req = ucp_ep_close_nbx(ep_, &p);
    auto end = Clock::now() + std::chrono::seconds(2);
    if (req != nullptr && !UCS_PTR_IS_ERR(req)) {
      while (ucp_request_check_status(req) == UCS_INPROGRESS && Clock::now() < end) {
        ucp_worker_progress(worker_);
      }
      ucp_request_free(req);
    }
    while (pending_sends > 0 && Clock::now() < end) ucp_worker_progress(worker_);
    ep_ = nullptr;
    buffers_.clear();
  }

  uint64_t expected_;
  std::mt19937_64 rng_;
  std::string secret_;
  sockaddr_in addr_{};
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
  std::string my_address_;
  std::list<std::string> buffers_;  // stable: UCX holds pointers into them
};

}  // namespace

int main(int argc, char** argv) {
  if (argc < 6) {
    std::fprintf(stderr,
                 "usage: %s <ip> <port> <expected_cluster> <seed> <messages> [--victim id] "
                 "[--secret s]\n",
                 argv[0]);
    return 2;
  }
  long victim = -1;
  std::string secret;
  for (int i = 6; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--victim") victim = std::atol(argv[i + 1]);
    if (std::string(argv[i]) == "--secret") secret = argv[i + 1];
  }
  long messages = std::atol(argv[5]);
  Client client(argv[1], static_cast<uint16_t>(std::atoi(argv[2])), std::strtoull(argv[3], 0, 10),
                std::strtoull(argv[4], 0, 10), secret);
  if (!client.start()) {
    std::fprintf(stderr, "cannot start UCX\n");
    return 1;
  }
  while (counters.sent < messages) {
    if (!client.connection(messages - counters.sent, victim)) {
      std::fprintf(stderr, "cannot create an endpoint\n");
      return 1;
    }
  }
  std::printf(
      "sent=%ld connections=%ld nacks=%ld acks=%ld ep_errors=%ld send_errors=%ld "
      "oversized=%ld data=%ld\n",
      counters.sent, counters.connections, counters.nacks, counters.acks, counters.ep_errors,
      counters.send_errors, counters.oversized, counters.data);
  return 0;
}
