#include "net/wire.h"

#include "common/bytes.h"

namespace kvdist::net {
namespace {

constexpr size_t kMaxRegions = 65536;
// id, base, len and an empty rkey's length prefix.
constexpr size_t kMinRegionBytes = 3 * sizeof(uint64_t) + sizeof(uint32_t);

void put_regions(ByteWriter& w, const std::vector<RegionInfo>& regions) {
  w.u32(static_cast<uint32_t>(regions.size()));
  for (const RegionInfo& r : regions) {
    w.u64(r.id);
    w.u64(r.base);
    w.u64(r.len);
    w.bytes(r.rkey);
  }
}

bool get_regions(ByteReader& r, std::vector<RegionInfo>* regions) {
  uint32_t n = 0;
  if (!r.count(&n, kMinRegionBytes) || n > kMaxRegions) return false;
  regions->resize(n);
  for (RegionInfo& region : *regions) {
    if (!r.u64(&region.id) || !r.u64(&region.base) || !r.u64(&region.len) ||
        !r.bytes(&region.rkey, kMaxRkeyBytes)) {
      return false;
    }
    if (region.len == 0 || region.base + region.len < region.base) return false;
  }
  return true;
}

}  // namespace

std::string encode(const Message& msg) {
  ByteWriter w;
  w.u32(kWireMagic);
  w.u32(kWireVersion);
  w.u8(static_cast<uint8_t>(msg.type));
  switch (msg.type) {
    case MsgType::kHello:
      w.u64(msg.cluster_id);
      w.u64(msg.expected_cluster_id);
      w.bytes(msg.host_id);
      w.bytes(msg.nonce);
      w.u64(msg.value);
      break;
    case MsgType::kChallenge:
      w.bytes(msg.nonce);
      break;
    case MsgType::kAuth:
      w.bytes(msg.proof);
      w.bytes(msg.worker_address);
      put_regions(w, msg.regions);
      break;
    case MsgType::kHelloAck:
      w.u64(msg.cluster_id);
      w.u64(msg.expected_cluster_id);
      w.bytes(msg.host_id);
      w.bytes(msg.proof);
      w.bytes(msg.worker_address);
      put_regions(w, msg.regions);
      break;
    case MsgType::kHelloNack:
      w.i64(msg.code);
      w.bytes(msg.text);
      break;
    case MsgType::kRegionAdd:
      put_regions(w, msg.regions);
      break;
    case MsgType::kRegionDel:
    case MsgType::kRegionDelAck:
    case MsgType::kPing:
    case MsgType::kPong:
      w.u64(msg.value);
      break;
    case MsgType::kNote:
    case MsgType::kProbe:
      w.bytes(msg.text);
      break;
    case MsgType::kProbeAck:
    case MsgType::kDataAck:
      w.u64(msg.value);
      w.i64(msg.code);
      break;
    case MsgType::kBye:
      break;
  }
  return w.take();
}

bool decode(std::string_view in, Message* msg) {
  if (in.size() > kMaxMessageBytes) return false;
  ByteReader r(in);
  uint32_t magic = 0;
  uint32_t version = 0;
  uint8_t type = 0;
  if (!r.u32(&magic) || magic != kWireMagic || !r.u32(&version) || version != kWireVersion ||
      !r.u8(&type)) {
    return false;
  }
  *msg = Message{};
  msg->type = static_cast<MsgType>(type);
  bool ok = false;
  switch (msg->type) {
    case MsgType::kHello:
      ok = r.u64(&msg->cluster_id) && r.u64(&msg->expected_cluster_id) &&
           r.bytes(&msg->host_id, kMaxTextBytes) && r.bytes(&msg->nonce, kMaxNonceBytes) &&
           r.u64(&msg->value);
      break;
    case MsgType::kChallenge:
      ok = r.bytes(&msg->nonce, kMaxNonceBytes);
      break;
    case MsgType::kAuth:
      ok = r.bytes(&msg->proof, kMaxProofBytes) &&
           r.bytes(&msg->worker_address, kMaxAddressBytes) && get_regions(r, &msg->regions);
      break;
    case MsgType::kHelloAck:
      ok = r.u64(&msg->cluster_id) && r.u64(&msg->expected_cluster_id) &&
           r.bytes(&msg->host_id, kMaxTextBytes) && r.bytes(&msg->proof, kMaxProofBytes) &&
           r.bytes(&msg->worker_address, kMaxAddressBytes) && get_regions(r, &msg->regions);
      break;
    case MsgType::kHelloNack:
      ok = r.i64(&msg->code) && r.bytes(&msg->text, kMaxTextBytes);
      break;
    case MsgType::kRegionAdd:
      ok = get_regions(r, &msg->regions) && msg->regions.size() == 1;
      break;
    case MsgType::kRegionDel:
    case MsgType::kRegionDelAck:
    case MsgType::kPing:
    case MsgType::kPong:
      ok = r.u64(&msg->value);
      break;
    case MsgType::kNote:
      ok = r.bytes(&msg->text, kMaxTextBytes);
      break;
    case MsgType::kProbe:
      ok = r.bytes(&msg->text, kMaxProbeBytes);
      break;
    case MsgType::kProbeAck:
    case MsgType::kDataAck:
      ok = r.u64(&msg->value) && r.i64(&msg->code);
      break;
    case MsgType::kBye:
      ok = true;
      break;
    default:
      return false;
  }
  return ok && r.at_end();
}

std::string encode_data_header(const DataHeader& h) {
  ByteWriter w;
  w.u32(kDataMagic);
  w.u64(h.write_id);
  w.u32(h.index);
  w.u32(h.count);
  w.u64(h.region_id);
  w.u32(static_cast<uint32_t>(h.ranges.size()));
  for (const auto& [addr, len] : h.ranges) {
    w.u64(addr);
    w.u64(len);
  }
  w.bytes(h.note);
  return w.take();
}

bool decode_data_header(std::string_view in, DataHeader* h) {
  ByteReader r(in);
  uint32_t magic = 0;
  uint32_t n = 0;
  if (!r.u32(&magic) || magic != kDataMagic || !r.u64(&h->write_id) || !r.u32(&h->index) ||
      !r.u32(&h->count) || !r.u64(&h->region_id) || !r.count(&n, 2 * sizeof(uint64_t)) || n == 0 ||
      n > kMaxDataRanges || h->count == 0 || h->index >= h->count) {
    return false;
  }
  h->ranges.resize(n);
  for (auto& [addr, len] : h->ranges) {
    if (!r.u64(&addr) || !r.u64(&len) || len == 0 || addr + len < addr) return false;
  }
  return r.bytes(&h->note, kMaxDataNoteBytes) && r.at_end();
}

}  // namespace kvdist::net
