#include "core/notes.h"

#include "common/bytes.h"
#include "kvdist/data_dist.h"

namespace kvdist::core {

std::string encode_note(const Note& note) {
  ByteWriter w;
  w.u8(static_cast<uint8_t>(note.kind));
  w.u64(note.task_id);
  w.u32(note.layer);
  w.i64(static_cast<int64_t>(note.code));
  w.u32(static_cast<uint32_t>(note.addrs.size()));
  for (uint64_t a : note.addrs) w.u64(a);
  w.bytes(note.payload);
  return w.take();
}

bool decode_note(std::string_view in, Note* note) {
  ByteReader r(in);
  uint8_t kind = 0;
  int64_t code = 0;
  uint32_t n = 0;
  if (!r.u8(&kind) || kind < 1 || kind > 6 || !r.u64(&note->task_id) || !r.u32(&note->layer) ||
      !r.i64(&code) || !r.count(&n, sizeof(uint64_t))) {
    return false;
  }
  note->kind = static_cast<Note::Kind>(kind);
  note->code = static_cast<StatusCode>(code);
  note->addrs.resize(n);
  for (uint64_t& a : note->addrs) {
    if (!r.u64(&a)) return false;
  }
  return r.bytes(&note->payload, kMaxPeerMessageBytes) && r.at_end();
}

}  // namespace kvdist::core
