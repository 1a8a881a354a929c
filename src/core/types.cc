#include "kvdist/types.h"

#include <string>

namespace kvdist {

size_t data_type_size(DataType type) {
  switch (type) {
    case DataType::kInt8:
    case DataType::kUint8:
    case DataType::kBool:
      return 1;
    case DataType::kFloat16:
    case DataType::kBf16:
    case DataType::kInt16:
    case DataType::kUint16:
      return 2;
    case DataType::kFloat:
    case DataType::kInt32:
    case DataType::kUint32:
      return 4;
    case DataType::kInt64:
    case DataType::kUint64:
    case DataType::kDouble:
      return 8;
    case DataType::kString:
      return 0;
  }
  return 0;
}

Status CacheDesc::validate() const {
  if (num_tensors == 0) return Status(StatusCode::kParamInvalid, "num_tensors must be > 0");
  if (tensors_per_layer == 0) {
    return Status(StatusCode::kParamInvalid, "tensors_per_layer must be > 0");
  }
  if (shape.empty()) return Status(StatusCode::kParamInvalid, "shape must not be empty");
  for (size_t i = 0; i < shape.size(); ++i) {
    if (shape[i] <= 0) {
      return Status(StatusCode::kParamInvalid, "shape[" + std::to_string(i) + "] is " +
                                                   std::to_string(shape[i]) + ", must be > 0");
    }
  }
  if (data_type_size(data_type) == 0) {
    return Status(StatusCode::kParamInvalid, "data_type has no fixed element size");
  }
  auto rank = static_cast<int32_t>(shape.size());
  if (batch_dim_index < 0 || batch_dim_index >= rank) {
    return Status(StatusCode::kParamInvalid, "batch_dim_index " + std::to_string(batch_dim_index) +
                                                 " is outside [0, " + std::to_string(rank) + ")");
  }
  if (seq_len_dim_index != -1 && (seq_len_dim_index < 0 || seq_len_dim_index >= rank)) {
    return Status(StatusCode::kParamInvalid,
                  "seq_len_dim_index " + std::to_string(seq_len_dim_index) +
                      " is neither -1 nor in [0, " + std::to_string(rank) + ")");
  }
  uint64_t bytes = data_type_size(data_type);
  for (int64_t d : shape) {
    if (bytes > (uint64_t{1} << 48) / static_cast<uint64_t>(d)) {
      return Status(StatusCode::kParamInvalid, "tensor size overflows");
    }
    bytes *= static_cast<uint64_t>(d);
  }
  return Status();
}

uint64_t CacheDesc::tensor_bytes() const {
  uint64_t bytes = data_type_size(data_type);
  for (int64_t d : shape) bytes *= static_cast<uint64_t>(d);
  return bytes;
}

int64_t CacheDesc::batch_size() const {
  if (batch_dim_index < 0 || static_cast<size_t>(batch_dim_index) >= shape.size()) return 0;
  return shape[batch_dim_index];
}

}  // namespace kvdist
