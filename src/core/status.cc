#include "kvdist/status.h"

namespace kvdist {

const char* status_code_name(StatusCode code) {
  switch (code) {
    case StatusCode::kSuccess:
      return "LLM_SUCCESS";
    case StatusCode::kFailed:
      return "LLM_FAILED";
    case StatusCode::kWaitProcessTimeout:
      return "LLM_WAIT_PROCESS_TIMEOUT";
    case StatusCode::kKvCacheNotExist:
      return "LLM_KV_CACHE_NOT_EXIST";
    case StatusCode::kRepeatRequest:
      return "LLM_REPEAT_REQUEST";
    case StatusCode::kRequestAlreadyCompleted:
      return "LLM_REQUEST_ALREADY_COMPLETED";
    case StatusCode::kParamInvalid:
      return "LLM_PARAM_INVALID";
    case StatusCode::kEngineFinalized:
      return "LLM_ENGINE_FINALIZED";
    case StatusCode::kNotYetLink:
      return "LLM_NOT_YET_LINK";
    case StatusCode::kAlreadyLink:
      return "LLM_ALREADY_LINK";
    case StatusCode::kLinkFailed:
      return "LLM_LINK_FAILED";
    case StatusCode::kUnlinkFailed:
      return "LLM_UNLINK_FAILED";
    case StatusCode::kNotifyPromptUnlinkFailed:
      return "LLM_NOTIFY_PROMPT_UNLINK_FAILED";
    case StatusCode::kClusterNumExceedLimit:
      return "LLM_CLUSTER_NUM_EXCEED_LIMIT";
    case StatusCode::kProcessingLink:
      return "LLM_PROCESSING_LINK";
    case StatusCode::kDeviceOutOfMemory:
      return "LLM_DEVICE_OUT_OF_MEMORY";
    case StatusCode::kPrefixAlreadyExist:
      return "LLM_PREFIX_ALREADY_EXIST";
    case StatusCode::kPrefixNotExist:
      return "LLM_PREFIX_NOT_EXIST";
    case StatusCode::kSeqLenOverLimit:
      return "LLM_SEQ_LENOVERLIMIT";
    case StatusCode::kNoFreeBlock:
      return "LLM_NO_FREE_BLOCK";
    case StatusCode::kBlocksOutOfMemory:
      return "LLM_BLOCKS_OUT_OF_MEMORY";
    case StatusCode::kExistLink:
      return "LLM_EXIST_LINK";
    case StatusCode::kFeatureNotEnabled:
      return "LLM_FEATURE_NOT_ENABLED";
    case StatusCode::kTimeout:
      return "LLM_TIMEOUT";
    case StatusCode::kLinkBusy:
      return "LLM_LINK_BUSY";
    case StatusCode::kOutOfMemory:
      return "LLM_OUT_OF_MEMORY";
    case StatusCode::kDeviceMemError:
      return "LLM_DEVICE_MEM_ERROR";
    case StatusCode::kSuspectRemoteError:
      return "LLM_SUSPECT_REMOTE_ERROR";
    case StatusCode::kUnknownError:
      return "LLM_UNKNOWN_ERROR";
  }
  return "LLM_UNKNOWN_ERROR";
}

std::string Status::to_string() const {
  std::string s = status_code_name(code_);
  if (!message_.empty()) s += ": " + message_;
  return s;
}

}  // namespace kvdist
