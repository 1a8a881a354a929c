// Status codes and the Status value returned by every fallible kvdist call.
//
// The numeric values are LLM-DataDist's (reference: llm_datadist_api.md §2),
// so a code printed by kvdist means the same as one printed by the original.
#ifndef KVDIST_STATUS_H_
#define KVDIST_STATUS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

namespace kvdist {

enum class StatusCode : int64_t {
  kSuccess = 0,
  kFailed = 0xFFFFFFFF,
  kWaitProcessTimeout = 0x5010B001,
  kKvCacheNotExist = 0x5010B002,
  kRepeatRequest = 0x5010B003,
  kRequestAlreadyCompleted = 0x5010B004,
  kParamInvalid = 0x5010B005,
  kEngineFinalized = 0x5010B006,
  kNotYetLink = 0x5010B007,
  kAlreadyLink = 0x5010B008,
  kLinkFailed = 0x5010B009,
  kUnlinkFailed = 0x5010B00A,
  kNotifyPromptUnlinkFailed = 0x5010B00B,
  kClusterNumExceedLimit = 0x5010B00C,
  kProcessingLink = 0x5010B00D,
  kDeviceOutOfMemory = 0x5010B00E,
  kPrefixAlreadyExist = 0x5010B00F,
  kPrefixNotExist = 0x5010B010,
  kSeqLenOverLimit = 0x5010B011,
  kNoFreeBlock = 0x5010B012,
  kBlocksOutOfMemory = 0x5010B013,
  kExistLink = 0x5010B018,
  kFeatureNotEnabled = 0x5010B019,
  kTimeout = 0x5010B01A,
  kLinkBusy = 0x5010B01B,
  kOutOfMemory = 0x5010B01C,
  kDeviceMemError = 507053,
  kSuspectRemoteError = 507057,
  kUnknownError = -1,
};

// "LLM_PARAM_INVALID" for kParamInvalid; "LLM_UNKNOWN_ERROR" for values
// outside the table.
const char* status_code_name(StatusCode code);

// An error code with a message naming what was wrong. Cheap to copy.
class Status {
 public:
  Status() = default;
  Status(StatusCode code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status ok_status() { return Status(); }

  bool ok() const { return code_ == StatusCode::kSuccess; }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "LLM_PARAM_INVALID: dst_addrs has 78 entries, 80 expected".
  std::string to_string() const;

 private:
  StatusCode code_ = StatusCode::kSuccess;
  std::string message_;
};

// A value or the Status that explains why there is none.
template <typename T>
class Result {
 public:
  Result(T value) : value_(std::move(value)) {}          // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }

 private:
  Status status_;
  std::optional<T> value_;
};

}  // namespace kvdist

#endif  // KVDIST_STATUS_H_
