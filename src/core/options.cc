#include <string>

#include "kvdist/data_dist.h"

namespace kvdist {
namespace {

bool parse_u64(const std::string& s, uint64_t* v) {
  if (s.empty() || s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos) {
    return false;
  }
  *v = std::stoull(s);
  return true;
}

Status bad(const std::string& key, const std::string& value, const char* want) {
  return Status(StatusCode::kParamInvalid, "option " + key + " = '" + value + "' is not " + want);
}

}  // namespace

Result<Options> Options::from_map(Role role, const std::map<std::string, std::string>& options) {
  Options o;
  uint64_t v = 0;
  auto get = [&](const char* key) -> const std::string* {
    auto it = options.find(key);
    return it == options.end() ? nullptr : &it->second;
  };
  // The Python package's keys, or the original C++ API's (llm.DeviceId,
  // llm.ListenIpInfo: OPTION_DEVICE_ID, OPTION_LISTEN_IP_INFO).
  const std::string* device = get("ge.exec.deviceId");
  if (device == nullptr) device = get("llm.DeviceId");
  if (device == nullptr) {
    return Status(StatusCode::kParamInvalid,
                  "option ge.exec.deviceId (device_id; llm.DeviceId in C++) is required");
  }
  // "0" or "0;1": only the first device is used on a CPU host.
  std::string first = device->substr(0, device->find(';'));
  if (!parse_u64(first, &v) || v > INT32_MAX)
    return bad("ge.exec.deviceId", *device, "a device id");
  o.device_id = static_cast<int32_t>(v);
  if (const std::string* listen = get("llm.listenIpInfo")) {
    o.listen_ip_info = *listen;
  } else if (const std::string* cpp_listen = get("llm.ListenIpInfo")) {
    o.listen_ip_info = *cpp_listen;
  }
  if (role == Role::kPrompt && o.listen_ip_info.empty()) {
    return Status(StatusCode::kParamInvalid,
                  "option llm.listenIpInfo (listen_ip_info) is required for a PROMPT");
  }
  if (const std::string* t = get("llm.SyncKvCacheWaitTime")) {
    if (!parse_u64(*t, &v) || v == 0 || v > INT32_MAX) {
      return bad("llm.SyncKvCacheWaitTime", *t, "a positive number of ms");
    }
    o.sync_kv_timeout_ms = static_cast<int32_t>(v);
  }
  if (const std::string* m = get("ge.flowGraphMemMaxSize")) {
    if (!parse_u64(*m, &v) || v == 0) return bad("ge.flowGraphMemMaxSize", *m, "a byte count");
    o.pool_max_bytes = v;
  }
  if (const std::string* t = get("kvdist.TransferTimeout")) {
    if (!parse_u64(*t, &v) || v == 0 || v > INT32_MAX) {
      return bad("kvdist.TransferTimeout", *t, "a positive number of ms");
    }
    o.transfer_timeout_ms = static_cast<int32_t>(v);
  }
  if (const std::string* n = get("kvdist.InflightLayers")) {
    if (!parse_u64(*n, &v) || v == 0 || v > 1024) {
      return bad("kvdist.InflightLayers", *n, "a count in [1, 1024]");
    }
    o.inflight_layers = static_cast<uint32_t>(v);
  }
  if (const std::string* n = get("kvdist.CopyLanes")) {
    if (!parse_u64(*n, &v) || v > 64) {
      return bad("kvdist.CopyLanes", *n, "a count in [0, 64] (0: one per CPU)");
    }
    o.copy_lanes = static_cast<uint32_t>(v);
  }
  if (const std::string* secret = get("kvdist.AuthSecret")) o.auth_secret = *secret;
  if (const std::string* net = get("kvdist.NetworkPath")) {
    if (*net != "0" && *net != "1") return bad("kvdist.NetworkPath", *net, "0 or 1");
    o.network_path_only = *net == "1";
  }
  return o;
}

}  // namespace kvdist
