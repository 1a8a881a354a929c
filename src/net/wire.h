// Control messages between two kvdist transports: the handshake, region
// tables, acknowledgements and opaque notes. Every message starts with the
// protocol magic and version; decode() rejects anything malformed,
// truncated, oversized or with trailing bytes.
#ifndef KVDIST_NET_WIRE_H_
#define KVDIST_NET_WIRE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace kvdist::net {

inline constexpr uint32_t kWireMagic = 0x5344564B;  // "KVDS"
inline constexpr uint32_t kWireVersion = 3;
inline constexpr size_t kMaxMessageBytes = size_t{1} << 20;
inline constexpr size_t kMaxRkeyBytes = 4096;
inline constexpr size_t kMaxAddressBytes = 65536;
inline constexpr size_t kMaxTextBytes = 65536;
inline constexpr size_t kMaxProbeBytes = 64;
inline constexpr size_t kMaxNonceBytes = 64;
inline constexpr size_t kMaxProofBytes = 64;

// The handshake: kHello (client), kChallenge (server), kAuth (client: its
// proof, worker address and regions), kHelloAck (server: its proof, worker
// address and regions) or kHelloNack. Neither side hands a worker address
// or a remote key of the other to UCX before the other has proved the
// shared secret (when one is set).
enum class MsgType : uint8_t {
  kHello = 1,         // client -> server: who I am, whom I expect, a nonce
  kHelloAck = 2,      // server -> client: accepted, the server's regions
  kHelloNack = 3,     // server -> client: refused (code, text)
  kRegionAdd = 4,     // regions[0] may now be written by the receiver
  kRegionDel = 5,     // value = region id: write no more into it
  kRegionDelAck = 6,  // value = region id: no write of mine into it can land
  kPing = 7,          // value = sequence; answered by kPong after earlier messages
  kPong = 8,
  kNote = 9,  // text = opaque payload for the layer above
  kBye = 10,  // orderly unlink
  // Same-host check before copying into the peer with process_vm_writev:
  // text = a random nonce; the peer keeps it in its memory and answers
  // kProbeAck with value = its address there, code = the peer's pid.
  kProbe = 11,
  kProbeAck = 12,
  kChallenge = 13,  // server -> client: nonce = the server's nonce
  kAuth = 14,       // client -> server: proof, worker address, regions
  // Active-message writes (net/am_path.cc): value = the sender's write id,
  // code = 0 when every message of it was placed, else a StatusCode.
  kDataAck = 15,
};

// Hello flags (Message::value).
inline constexpr uint64_t kHelloHasSecret = 1;

// Memory a peer may write: [base, base + len), with the packed remote key.
struct RegionInfo {
  uint64_t id = 0;
  uint64_t base = 0;
  uint64_t len = 0;
  std::string rkey;
};

// One struct for all types; each type uses the fields its comment names.
struct Message {
  MsgType type = MsgType::kPing;
  uint64_t cluster_id = 0;           // hello, ack: sender
  uint64_t expected_cluster_id = 0;  // hello, ack: the cluster the sender meant to reach
  std::string host_id;               // hello, ack
  std::string nonce;                 // hello, challenge
  std::string proof;                 // auth, ack (HMAC-SHA256, or empty)
  std::string worker_address;        // auth, ack
  std::vector<RegionInfo> regions;   // auth, ack, region_add
  uint64_t value = 0;                // hello flags, region_del(_ack), ping, pong, probe_ack
  int64_t code = 0;                  // nack, probe_ack
  std::string text;                  // nack message, note payload, probe nonce
};

// The header of a data message on the active-message path (net/am_path.cc):
// message `index` of `count` of the sender's write `write_id`, whose payload
// goes to `ranges` (address, length at the receiver), all in one region.
// `note`: the write's note, carried by one of its messages, for the
// receiver to deliver once every message of the write is in.
inline constexpr uint32_t kDataMagic = 0x4D41564B;  // "KVAM"
inline constexpr size_t kMaxDataRanges = 256;
inline constexpr size_t kMaxDataNoteBytes = 2048;
struct DataHeader {
  uint64_t write_id = 0;
  uint32_t index = 0;
  uint32_t count = 0;
  uint64_t region_id = 0;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  std::string note;
};
std::string encode_data_header(const DataHeader& h);
// False for anything but one well-formed header: 1..kMaxDataRanges ranges,
// none empty or wrapping, index < count, a note of at most
// kMaxDataNoteBytes.
bool decode_data_header(std::string_view in, DataHeader* h);

std::string encode(const Message& msg);
// False (and *msg unspecified) for any input that is not exactly one valid
// message of this version.
bool decode(std::string_view in, Message* msg);

}  // namespace kvdist::net

#endif  // KVDIST_NET_WIRE_H_
