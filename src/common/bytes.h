// Bounds-checked little-endian encoding of control messages. A Reader never
// reads past its input: every getter reports failure instead.
#ifndef KVDIST_COMMON_BYTES_H_
#define KVDIST_COMMON_BYTES_H_

#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace kvdist {

class ByteWriter {
 public:
  void u8(uint8_t v) { out_.push_back(static_cast<char>(v)); }
  void u32(uint32_t v) { raw(&v, sizeof(v)); }
  void u64(uint64_t v) { raw(&v, sizeof(v)); }
  void i64(int64_t v) { raw(&v, sizeof(v)); }
  // Length-prefixed (u32) bytes.
  void bytes(std::string_view v) {
    u32(static_cast<uint32_t>(v.size()));
    out_.append(v.data(), v.size());
  }
  std::string take() { return std::move(out_); }
  const std::string& data() const { return out_; }

 private:
  void raw(const void* p, size_t n) { out_.append(static_cast<const char*>(p), n); }
  std::string out_;
};

class ByteReader {
 public:
  explicit ByteReader(std::string_view in) : in_(in) {}

  bool u8(uint8_t* v) { return raw(v, sizeof(*v)); }
  bool u32(uint32_t* v) { return raw(v, sizeof(*v)); }
  bool u64(uint64_t* v) { return raw(v, sizeof(*v)); }
  bool i64(int64_t* v) { return raw(v, sizeof(*v)); }
  // Fails if the length prefix exceeds the input left or max_len.
  bool bytes(std::string* v, size_t max_len) {
    uint32_t n = 0;
    if (!u32(&n) || n > max_len || n > in_.size() - pos_) return false;
    v->assign(in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  // A count of following items of at least item_bytes each: fails if the
  // input left cannot hold that many (so a hostile count cannot make the
  // caller reserve gigabytes).
  bool count(uint32_t* n, size_t item_bytes) {
    return u32(n) && static_cast<uint64_t>(*n) * item_bytes <= in_.size() - pos_;
  }
  bool at_end() const { return pos_ == in_.size(); }

 private:
  bool raw(void* p, size_t n) {
    if (n > in_.size() - pos_) return false;
    std::memcpy(p, in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  std::string_view in_;
  size_t pos_ = 0;
};

}  // namespace kvdist

#endif  // KVDIST_COMMON_BYTES_H_
