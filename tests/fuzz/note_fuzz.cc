// libFuzzer target: the decoder of the notes a sender attaches to a
// transfer (core::decode_note), which a DECODER runs on every note a peer
// sends, and of what pull and resolve requests and their answers carry
// (core::decode_pull_request, decode_cache_key, decode_cache_info), which
// any linked peer may send. No crash,
// no unbounded allocation; what they accept re-encodes to the same bytes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "core/notes.h"
#include "core/pull_request.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  kvdist::core::Note note;
  if (kvdist::core::decode_note(in, &note)) {
    if (kvdist::core::encode_note(note) != in) __builtin_trap();
  }
  kvdist::core::PullRequest req;
  if (kvdist::core::decode_pull_request(in, &req)) {
    if (kvdist::core::encode_pull_request(req) != in) __builtin_trap();
  }
  kvdist::CacheKey key;
  if (kvdist::core::decode_cache_key(in, &key)) {
    if (kvdist::core::encode_cache_key(key) != in) __builtin_trap();
  }
  kvdist::core::CacheInfo info;
  if (kvdist::core::decode_cache_info(in, &info)) {
    if (kvdist::core::encode_cache_info(info) != in) __builtin_trap();
  }
  return 0;
}
