// libFuzzer target: the control-message decoder (net::decode) and the
// data-message header decoder (net::decode_data_header). Whatever the
// input, decode must not crash, read out of bounds or allocate without
// bound; and what it accepts must encode back to the same bytes (there is
// exactly one encoding of a message).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "net/wire.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  kvdist::net::Message msg;
  if (kvdist::net::decode(in, &msg)) {
    if (kvdist::net::encode(msg) != in) __builtin_trap();
  }
  kvdist::net::DataHeader header;
  if (kvdist::net::decode_data_header(in, &header)) {
    if (kvdist::net::encode_data_header(header) != in) __builtin_trap();
  }
  return 0;
}
