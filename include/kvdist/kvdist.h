// Everything of kvdist's public C++ API.
#ifndef KVDIST_KVDIST_H_
#define KVDIST_KVDIST_H_

#include "kvdist/cache_manager.h"
#include "kvdist/cache_task.h"
#include "kvdist/data_dist.h"
#include "kvdist/layer_synchronizer.h"
#include "kvdist/status.h"
#include "kvdist/types.h"

#endif  // KVDIST_KVDIST_H_
