// The caller's side of a layer-wise transfer: kvdist asks, layer by layer,
// whether the model has finished writing that layer of the source cache.
#ifndef KVDIST_LAYER_SYNCHRONIZER_H_
#define KVDIST_LAYER_SYNCHRONIZER_H_

#include <cstdint>
#include <optional>

namespace kvdist {

// Implemented by the caller. synchronize_layer(l, timeout) is called once per
// transferred layer, in ascending order, from a kvdist worker thread (never
// concurrently for one task). It should block until layer l of the source
// cache is written and return true, or return false to abort the task.
//
// timeout_ms is the deadline the caller should honour (empty: none given,
// as in the original API). kvdist also enforces it: a call that has not
// returned when the deadline passes fails the layer with kTimeout, and its
// late answer is ignored. An exception escaping the call fails the layer
// with kFailed; it never crosses into kvdist's threads.
class LayerSynchronizer {
 public:
  virtual ~LayerSynchronizer() = default;
  virtual bool synchronize_layer(uint32_t layer_index, std::optional<int32_t> timeout_ms) = 0;
};

}  // namespace kvdist

#endif  // KVDIST_LAYER_SYNCHRONIZER_H_
