// The notes between two DataDists: what a sender attaches to a transfer for
// its destination ("layer L of this task is in place at these addresses",
// "this config failed"), messages of the layer above (send_message), and
// the requests and replies of pulls.
#ifndef KVDIST_CORE_NOTES_H_
#define KVDIST_CORE_NOTES_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kvdist/status.h"

namespace kvdist::core {

struct Note {
  // kPullRequest: payload is a PullRequest (core/pull_request.h).
  // kResolveRequest: task_id is the request's id, payload a CacheKey.
  // kPullReply: the answer to either: task_id is the request's id, code
  // its outcome, payload why (failure) or the CacheInfo (resolve).
  enum class Kind : uint8_t {
    kLayer = 1,
    kAbort = 2,
    kMessage = 3,
    kPullRequest = 4,
    kPullReply = 5,
    kResolveRequest = 6
  };
  Kind kind = Kind::kLayer;
  uint64_t task_id = 0;
  uint32_t layer = 0;                      // source layer (kLayer)
  StatusCode code = StatusCode::kSuccess;  // kAbort
  std::vector<uint64_t> addrs;             // destination tensor addresses concerned
  std::string payload;                     // kMessage: the caller's bytes
};

std::string encode_note(const Note& note);
bool decode_note(std::string_view in, Note* note);

}  // namespace kvdist::core

#endif  // KVDIST_CORE_NOTES_H_
