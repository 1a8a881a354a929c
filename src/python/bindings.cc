// kvdist._kvdist: the Python binding of libkvdist. Conversion only: every
// behaviour lives in the C++ library. Blocking calls release the GIL; the
// synchronizer is called from kvdist's worker thread with the GIL taken
// only for the call.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "kvdist/kvdist.h"

namespace py = pybind11;

namespace {

using kvdist::Status;
using kvdist::StatusCode;

// KvdistError(RuntimeError) with .code (int) and .message (str); created at
// import, kept for the life of the process.
PyObject* g_error_type = nullptr;

[[noreturn]] void raise_status(const Status& s) {
  py::object type = py::reinterpret_borrow<py::object>(g_error_type);
  py::object err = type(py::str(s.to_string()));
  err.attr("code") = py::int_(static_cast<int64_t>(s.code()));
  err.attr("message") = py::str(s.message());
  PyErr_SetObject(g_error_type, err.ptr());
  throw py::error_already_set();
}

void check(const Status& s) {
  if (!s.ok()) raise_status(s);
}

// A failure found where the GIL may be released (e.g. a finalized
// DataDist seen inside a blocking call): thrown as a C++ exception and
// turned into KvdistError by the translator below, with the GIL held.
struct StatusError {
  Status status;
};

// Runs a blocking call without the GIL; raises its failure.
template <typename Call>
void without_gil(Call call) {
  Status s;
  {
    py::gil_scoped_release nogil;
    s = call();
  }
  check(s);
}

bool interpreter_alive() {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsInitialized() && !Py_IsFinalizing();
#else
  return Py_IsInitialized() && !_Py_IsFinalizing();
#endif
}

// A Python callable (layer, timeout_ms | None) -> bool as a LayerSynchronizer.
// A Python thread state for a kvdist thread (a task's job thread) that
// calls into Python, kept for the thread's life: without it pybind11
// creates and deletes one around every call, on every layer.
class ThreadStateKeeper {
 public:
  static void ensure() {
    thread_local ThreadStateKeeper keeper;
    if (keeper.ts_ == nullptr && PyGILState_GetThisThreadState() == nullptr) {
      keeper.ts_ = PyThreadState_New(PyInterpreterState_Main());
    }
  }
  ~ThreadStateKeeper() {
    if (ts_ == nullptr || !interpreter_alive()) return;  // at exit: left to the interpreter
    PyEval_RestoreThread(ts_);
    PyThreadState_Clear(ts_);
    PyThreadState_DeleteCurrent();
  }

 private:
  PyThreadState* ts_ = nullptr;
};

class PySynchronizer : public kvdist::LayerSynchronizer {
 public:
  explicit PySynchronizer(py::object fn) : fn_(std::make_unique<py::object>(std::move(fn))) {}
  ~PySynchronizer() override {
    if (!interpreter_alive()) {
      (void)fn_.release();  // cannot touch Python objects any more: leak
      return;
    }
    py::gil_scoped_acquire gil;
    fn_.reset();
  }
  bool synchronize_layer(uint32_t layer, std::optional<int32_t> timeout_ms) override {
    if (!interpreter_alive()) throw std::runtime_error("the Python interpreter is shutting down");
    ThreadStateKeeper::ensure();
    py::gil_scoped_acquire gil;
    try {
      py::object timeout = timeout_ms ? py::object(py::int_(*timeout_ms)) : py::object(py::none());
      py::object answer = (*fn_)(layer, timeout);
      return PyObject_IsTrue(answer.ptr()) == 1;
    } catch (py::error_already_set& e) {
      // "ValueError: boom", without the traceback pybind11 appends.
      std::string what = py::str(e.type().attr("__name__")).cast<std::string>() + ": " +
                         py::str(e.value()).cast<std::string>();
      throw std::runtime_error(what);
    }
  }

 private:
  std::unique_ptr<py::object> fn_;
};

kvdist::CacheDesc make_desc(uint32_t num_tensors, const std::vector<int64_t>& shape, int dtype,
                            int placement, int batch_dim, int seq_dim,
                            uint32_t tensors_per_layer = 2) {
  kvdist::CacheDesc d;
  d.num_tensors = num_tensors;
  d.tensors_per_layer = tensors_per_layer;
  d.shape = shape;
  d.data_type = static_cast<kvdist::DataType>(dtype);
  d.placement = static_cast<kvdist::Placement>(placement);
  d.batch_dim_index = batch_dim;
  d.seq_len_dim_index = seq_dim;
  return d;
}

using Cluster = std::tuple<uint64_t, std::string, uint16_t>;
using ConfigTuple = std::tuple<uint64_t, std::vector<uint64_t>, std::optional<uint32_t>,
                               std::optional<uint32_t>, uint32_t>;

// (kind, prompt_cluster_id, req_id, prefix_id, model_id, cache_id, batch_index).
using KeyTuple = std::tuple<int, uint64_t, uint64_t, uint64_t, uint64_t, int64_t, uint32_t>;
using Range = std::tuple<uint32_t, uint32_t>;
using Pairs = std::vector<std::pair<uint64_t, uint64_t>>;
// A config addressed by key: (key, destination layer range or None).
using KeyedDst = std::tuple<KeyTuple, std::optional<Range>>;
// (cache_id, tensor addresses, num_tensors, shape, dtype, placement): a cache
// as the caller knows it (cache_id -1 for caller memory of swap_blocks).
using CacheTuple =
    std::tuple<int64_t, std::vector<uint64_t>, uint32_t, std::vector<int64_t>, int, int>;

kvdist::CacheKey to_key(const KeyTuple& t) {
  kvdist::CacheKey k;
  k.kind = static_cast<kvdist::CacheKey::Kind>(std::get<0>(t));
  k.prompt_cluster_id = std::get<1>(t);
  k.req_id = std::get<2>(t);
  k.prefix_id = std::get<3>(t);
  k.model_id = std::get<4>(t);
  k.cache_id = std::get<5>(t);
  k.batch_index = std::get<6>(t);
  return k;
}

kvdist::KvCache to_cache(const CacheTuple& t) {
  const auto& [id, addrs, num_tensors, shape, dtype, placement] = t;
  kvdist::KvCache c;
  c.cache_id = id;
  c.tensor_addrs = addrs;
  c.desc = make_desc(num_tensors, shape, dtype, placement, 0, -1);
  return c;
}

std::optional<kvdist::LayerRange> to_range(const std::optional<Range>& r) {
  if (!r) return std::nullopt;
  return kvdist::LayerRange{std::get<0>(*r), std::get<1>(*r)};
}

std::vector<kvdist::ClusterInfo> to_clusters(const std::vector<Cluster>& in) {
  std::vector<kvdist::ClusterInfo> out;
  for (const auto& [id, ip, port] : in) out.push_back(kvdist::ClusterInfo{id, ip, port});
  return out;
}

// (first failure, per-cluster codes, per-cluster messages).
using LinkCodes = std::tuple<int64_t, std::vector<int64_t>, std::vector<std::string>>;

LinkCodes link_result(const kvdist::LinkResult& r) {
  std::vector<int64_t> codes;
  for (StatusCode c : r.per_cluster) codes.push_back(static_cast<int64_t>(c));
  return {static_cast<int64_t>(r.status), codes, r.messages};
}

std::optional<int64_t> code_or_none(const std::optional<StatusCode>& c) {
  if (!c) return std::nullopt;
  return static_cast<int64_t>(*c);
}

class PyDataDist {
 public:
  PyDataDist(int role, uint64_t cluster_id)
      : dd_(std::make_unique<kvdist::DataDist>(static_cast<kvdist::Role>(role), cluster_id)) {}

  void init_map(const std::map<std::string, std::string>& options) {
    auto o = kvdist::Options::from_map(dd_->role(), options);
    if (!o.ok()) raise_status(o.status());
    init_with(o.value());
  }
  void init(const std::string& listen, int32_t sync_kv_timeout_ms, int32_t transfer_timeout_ms,
            uint64_t pool_max_bytes, uint32_t inflight_layers, uint32_t copy_lanes,
            const std::string& auth_secret) {
    kvdist::Options o;
    o.listen_ip_info = listen;
    o.sync_kv_timeout_ms = sync_kv_timeout_ms;
    o.transfer_timeout_ms = transfer_timeout_ms;
    o.pool_max_bytes = pool_max_bytes;
    o.inflight_layers = inflight_layers;
    o.copy_lanes = copy_lanes;
    o.auth_secret = auth_secret;
    init_with(o);
  }
  void finalize() {
    py::gil_scoped_release nogil;
    dd_->finalize();
  }
  bool initialized() const { return dd_->initialized(); }
  uint16_t listen_port() const { return dd_->listen_port(); }
  int role() const { return static_cast<int>(dd_->role()); }
  uint64_t cluster_id() const { return dd_->cluster_id(); }

  LinkCodes link(const std::vector<Cluster>& clusters, int32_t timeout_ms) {
    return per_cluster(&kvdist::DataDist::link_clusters, clusters, timeout_ms);
  }
  LinkCodes unlink(const std::vector<Cluster>& clusters, int32_t timeout_ms) {
    return per_cluster(&kvdist::DataDist::unlink_clusters, clusters, timeout_ms);
  }
  std::tuple<int64_t, std::string> check_link(uint64_t cluster) {
    Status s;
    {
      py::gil_scoped_release nogil;
      s = dd_->check_link_status(cluster);
    }
    return {static_cast<int64_t>(s.code()), s.message()};
  }
  std::vector<uint64_t> linked() {
    py::gil_scoped_release nogil;
    return dd_->linked_clusters();
  }

  std::tuple<int64_t, std::vector<uint64_t>> allocate(uint32_t num_tensors,
                                                      const std::vector<int64_t>& shape, int dtype,
                                                      int placement, int batch_dim, int seq_dim,
                                                      bool blocks,
                                                      const std::vector<KeyTuple>& keys) {
    auto d = make_desc(num_tensors, shape, dtype, placement, batch_dim, seq_dim);
    std::vector<kvdist::CacheKey> k;
    for (const KeyTuple& t : keys) k.push_back(to_key(t));
    kvdist::Result<kvdist::KvCache> c = Status(StatusCode::kFailed, "not run");
    {
      py::gil_scoped_release nogil;
      if (blocks) {
        c = k.empty() ? manager()->allocate_blocks_cache(d)
                      : manager()->allocate_blocks_cache(d, k.front());
      } else {
        c = manager()->allocate_cache(d, k);
      }
    }
    if (!c.ok()) raise_status(c.status());
    return {c->cache_id, c->tensor_addrs};
  }
  std::tuple<int64_t, std::vector<uint64_t>> register_cache(
      uint32_t num_tensors, const std::vector<int64_t>& shape, int dtype,
      const std::vector<uint64_t>& addrs, bool blocks, uint32_t tensors_per_layer) {
    auto d = make_desc(num_tensors, shape, dtype, static_cast<int>(kvdist::Placement::kDevice), 0,
                       -1, tensors_per_layer);
    kvdist::Result<kvdist::KvCache> c = Status(StatusCode::kFailed, "not run");
    {
      py::gil_scoped_release nogil;
      c = manager()->register_cache(d, addrs, blocks);
    }
    if (!c.ok()) raise_status(c.status());
    return {c->cache_id, c->tensor_addrs};
  }
  void deallocate(int64_t cache_id) {
    without_gil([&] { return manager()->deallocate_cache(cache_id); });
  }

  void switch_role(int role, const std::string& listen) {
    without_gil([&] { return dd_->switch_role(static_cast<kvdist::Role>(role), listen); });
  }

  void bind_keys(int64_t cache_id, const std::vector<KeyTuple>& keys) {
    std::vector<kvdist::CacheKey> k;
    for (const KeyTuple& t : keys) k.push_back(to_key(t));
    check(manager()->bind_cache_keys(cache_id, k));
  }

  void remove_key(const KeyTuple& key) { check(manager()->remove_cache_key(to_key(key))); }

  void pull(const KeyTuple& key, const CacheTuple& dst, uint32_t batch_index, int64_t size,
            std::optional<uint64_t> src_offset, std::optional<uint64_t> dst_offset,
            std::optional<Range> src_layers, std::optional<Range> dst_layers,
            uint32_t tensors_per_layer, const std::vector<uint64_t>& src_blocks,
            const std::vector<uint64_t>& dst_blocks, std::optional<int32_t> timeout_ms,
            bool keep_keys) {
    kvdist::PullSpec spec;
    spec.keep_keys = keep_keys;
    spec.batch_index = batch_index;
    spec.size = size;
    spec.src_offset = src_offset;
    spec.dst_offset = dst_offset;
    spec.src_layers = to_range(src_layers);
    spec.dst_layers = to_range(dst_layers);
    spec.tensors_per_layer = tensors_per_layer;
    spec.src_blocks = src_blocks;
    spec.dst_blocks = dst_blocks;
    spec.timeout_ms = timeout_ms;
    const kvdist::KvCache c = to_cache(dst);
    const kvdist::CacheKey k = to_key(key);
    without_gil([&] { return manager()->pull_cache(k, c, spec); });
  }

  void push(const CacheTuple& src, const KeyTuple& key, uint32_t src_batch_index,
            std::optional<Range> src_layers, std::optional<Range> dst_layers,
            uint32_t tensors_per_layer, const std::vector<uint64_t>& src_blocks,
            const std::vector<uint64_t>& dst_blocks, std::optional<int32_t> timeout_ms) {
    kvdist::PushSpec spec;
    spec.src_batch_index = src_batch_index;
    spec.src_layers = to_range(src_layers);
    spec.dst_layers = to_range(dst_layers);
    spec.tensors_per_layer = tensors_per_layer;
    spec.src_blocks = src_blocks;
    spec.dst_blocks = dst_blocks;
    spec.timeout_ms = timeout_ms;
    const kvdist::KvCache c = to_cache(src);
    const kvdist::CacheKey k = to_key(key);
    without_gil([&] { return manager()->push_cache(c, k, spec); });
  }

  void copy_cache(const CacheTuple& dst, const CacheTuple& src, uint32_t dst_batch,
                  uint32_t src_batch, uint64_t offset, int64_t size) {
    kvdist::CopySpec spec{dst_batch, src_batch, offset, size};
    const kvdist::KvCache d = to_cache(dst);
    const kvdist::KvCache c = to_cache(src);
    without_gil([&] { return manager()->copy_cache(d, c, spec); });
  }
  void copy_blocks(const CacheTuple& cache, const Pairs& pairs) {
    const kvdist::KvCache c = to_cache(cache);
    without_gil([&] { return manager()->copy_blocks(c, pairs); });
  }
  void swap_blocks(const CacheTuple& src, const CacheTuple& dst, const Pairs& pairs) {
    const kvdist::KvCache a = to_cache(src);
    const kvdist::KvCache b = to_cache(dst);
    without_gil([&] { return manager()->swap_blocks(a, b, pairs); });
  }
  py::bytes read_tensor(const CacheTuple& cache, uint32_t index) {
    const kvdist::KvCache c = to_cache(cache);
    kvdist::Result<std::string> r = Status(StatusCode::kFailed, "not run");
    {
      py::gil_scoped_release nogil;
      r = manager()->read_tensor(c, index);
    }
    if (!r.ok()) raise_status(r.status());
    return py::bytes(r.value());
  }

  kvdist::CacheTask transfer(
      int64_t cache_id, uint32_t num_tensors, const std::vector<int64_t>& shape, int dtype,
      int batch_dim, const std::vector<uint64_t>& addrs, py::object synchronizer,
      const std::vector<ConfigTuple>& configs, const std::vector<uint64_t>& src_blocks,
      const std::vector<uint64_t>& dst_blocks, std::optional<uint64_t> dst_block_size,
      std::optional<int32_t> sync_timeout_ms, bool unbounded, bool exclusive,
      uint32_t tensors_per_layer, const std::vector<std::optional<KeyedDst>>& dst_keys) {
    kvdist::KvCache src;
    src.cache_id = cache_id;
    src.desc = make_desc(num_tensors, shape, dtype, static_cast<int>(kvdist::Placement::kDevice),
                         batch_dim, -1, tensors_per_layer);
    src.tensor_addrs = addrs;
    std::vector<kvdist::TransferConfig> cfgs;
    for (const auto& [cluster, dst, start, stop, batch] : configs) {
      kvdist::TransferConfig c;
      c.dst_cluster_id = cluster;
      c.dst_addrs = dst;
      if (start && stop) c.src_layer_range = kvdist::LayerRange{*start, *stop};
      c.src_batch_index = batch;
      const size_t i = cfgs.size();
      if (i < dst_keys.size() && dst_keys[i]) {
        c.dst_key = to_key(std::get<0>(*dst_keys[i]));
        c.dst_layer_range = to_range(std::get<1>(*dst_keys[i]));
      }
      cfgs.push_back(std::move(c));
    }
    kvdist::BlockMapping blocks;
    blocks.src_block_indices = src_blocks;
    blocks.dst_block_indices = dst_blocks;
    blocks.dst_block_memory_size = dst_block_size;
    kvdist::TransferOptions options;
    options.sync_timeout_ms = sync_timeout_ms;
    options.unbounded_synchronizer = unbounded;
    options.exclusive = exclusive;
    auto sync = std::make_shared<PySynchronizer>(std::move(synchronizer));
    kvdist::Result<kvdist::CacheTask> task = Status(StatusCode::kFailed, "not run");
    {
      py::gil_scoped_release nogil;
      task =
          manager()->transfer_cache_async(src, std::move(sync), std::move(cfgs), blocks, options);
    }
    if (!task.ok()) raise_status(task.status());
    return task.value();
  }

  int64_t wait_layer(int64_t cache_id, uint32_t layer, int32_t timeout_ms) {
    kvdist::KvCache c;
    c.cache_id = cache_id;
    Status s;
    {
      py::gil_scoped_release nogil;
      s = manager()->wait_layer(c, layer, timeout_ms);
    }
    return static_cast<int64_t>(s.code());
  }
  int64_t reset_arrivals(int64_t cache_id) {
    kvdist::KvCache c;
    c.cache_id = cache_id;
    return static_cast<int64_t>(manager()->reset_arrivals(c).code());
  }
  uint64_t pool_bytes_in_use() { return manager()->pool_bytes_in_use(); }

  void send_message(uint64_t cluster, const py::bytes& payload) {
    std::string bytes = payload;
    without_gil([&] { return dd_->send_message(cluster, bytes); });
  }
  std::vector<std::tuple<uint64_t, py::bytes>> receive_messages(size_t max, int32_t timeout_ms) {
    std::vector<kvdist::PeerMessage> msgs;
    {
      py::gil_scoped_release nogil;
      msgs = dd_->receive_messages(max, timeout_ms);
    }
    std::vector<std::tuple<uint64_t, py::bytes>> out;
    out.reserve(msgs.size());
    for (auto& m : msgs) out.emplace_back(m.from_cluster, py::bytes(m.payload));
    return out;
  }
  uint64_t dropped_messages() const { return dd_->dropped_messages(); }

 private:
  void init_with(const kvdist::Options& o) {
    without_gil([&] { return dd_->init(o); });
  }
  using LinkCall = kvdist::LinkResult (kvdist::DataDist::*)(const std::vector<kvdist::ClusterInfo>&,
                                                            int32_t);
  LinkCodes per_cluster(LinkCall call, const std::vector<Cluster>& clusters, int32_t timeout_ms) {
    auto c = to_clusters(clusters);
    kvdist::LinkResult r;
    {
      py::gil_scoped_release nogil;
      r = (dd_.get()->*call)(c, timeout_ms);
    }
    return link_result(r);
  }
  // Safe without the GIL: a finalized DataDist throws StatusError.
  kvdist::CacheManager* manager() {
    kvdist::CacheManager* m = dd_->cache_manager();
    if (m == nullptr) {
      throw StatusError{Status(StatusCode::kEngineFinalized, "DataDist is not initialized")};
    }
    return m;
  }

  std::unique_ptr<kvdist::DataDist> dd_;
};

py::dict figures_dict(const kvdist::TaskFigures& f) {
  py::dict d;
  d["bytes"] = f.bytes;
  d["puts"] = f.puts;
  d["elapsed_ns"] = f.elapsed_ns;
  d["start_ns"] = f.start_ns;
  py::list layers;
  for (const auto& l : f.layers) {
    py::dict x;
    x["layer"] = l.layer;
    x["synchronized_ns"] = l.synchronized_ns;
    x["posted_ns"] = l.posted_ns;
    x["completed_ns"] = l.completed_ns;
    x["bytes"] = l.bytes;
    x["puts"] = l.puts;
    layers.append(x);
  }
  d["layers"] = layers;
  return d;
}

}  // namespace

PYBIND11_MODULE(_kvdist, m) {
  m.doc() = "Binding of libkvdist (see the kvdist package for the Python API).";
  py::object builtins = py::module_::import("builtins");
  py::object error = builtins.attr("type")(
      "KvdistError", py::make_tuple(builtins.attr("RuntimeError")),
      py::dict(py::arg("__module__") = "kvdist._kvdist",
               py::arg("__doc__") = "A kvdist call failed; .code is the status code, .message "
                                    "says what was wrong."));
  g_error_type = error.inc_ref().ptr();
  m.attr("KvdistError") = error;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      try {
        raise_status(e.status);
      } catch (py::error_already_set& set) {
        set.restore();
      }
    }
  });

  py::class_<kvdist::CacheTask>(m, "Task")
      .def(
          "synchronize",
          [](const kvdist::CacheTask& t, std::optional<uint32_t> timeout_ms) {
            py::gil_scoped_release nogil;
            return static_cast<int64_t>(t.synchronize(timeout_ms));
          },
          py::arg("timeout_ms") = py::none())
      .def(
          "get_results",
          [](const kvdist::CacheTask& t, std::optional<uint32_t> timeout_ms) {
            std::vector<std::optional<StatusCode>> r;
            {
              py::gil_scoped_release nogil;
              r = t.get_results(timeout_ms);
            }
            std::vector<std::optional<int64_t>> out;
            for (const auto& c : r) out.push_back(code_or_none(c));
            return out;
          },
          py::arg("timeout_ms") = py::none())
      .def("result_message", &kvdist::CacheTask::result_message)
      .def("cancel",
           [](const kvdist::CacheTask& t) {
             Status s;
             {
               py::gil_scoped_release nogil;
               s = t.cancel();
             }
             check(s);
           })
      .def("done",
           [](const kvdist::CacheTask& t) {
             py::gil_scoped_release nogil;
             return t.done();
           })
      .def("figures", [](const kvdist::CacheTask& t) { return figures_dict(t.figures()); });

  py::class_<PyDataDist>(m, "DataDist")
      .def(py::init<int, uint64_t>(), py::arg("role"), py::arg("cluster_id"))
      .def("init_map", &PyDataDist::init_map, py::arg("options"))
      .def("init", &PyDataDist::init, py::arg("listen") = "", py::arg("sync_kv_timeout_ms") = 1000,
           py::arg("transfer_timeout_ms") = 10000, py::arg("pool_max_bytes") = uint64_t{16} << 30,
           py::arg("inflight_layers") = 4, py::arg("copy_lanes") = 0, py::arg("auth_secret") = "")
      .def("finalize", &PyDataDist::finalize)
      .def_property_readonly("initialized", &PyDataDist::initialized)
      .def_property_readonly("listen_port", &PyDataDist::listen_port)
      .def_property_readonly("role", &PyDataDist::role)
      .def_property_readonly("cluster_id", &PyDataDist::cluster_id)
      .def("link", &PyDataDist::link, py::arg("clusters"), py::arg("timeout_ms"))
      .def("unlink", &PyDataDist::unlink, py::arg("clusters"), py::arg("timeout_ms"))
      .def("check_link", &PyDataDist::check_link, py::arg("cluster_id"))
      .def("linked", &PyDataDist::linked)
      .def("allocate", &PyDataDist::allocate, py::arg("num_tensors"), py::arg("shape"),
           py::arg("dtype"), py::arg("placement"), py::arg("batch_dim_index"),
           py::arg("seq_len_dim_index"), py::arg("blocks"),
           py::arg("keys") = std::vector<KeyTuple>())
      .def("remove_key", &PyDataDist::remove_key, py::arg("key"))
      .def("bind_keys", &PyDataDist::bind_keys, py::arg("cache_id"), py::arg("keys"))
      .def("switch_role", &PyDataDist::switch_role, py::arg("role"), py::arg("listen") = "")
      .def("pull", &PyDataDist::pull, py::arg("key"), py::arg("dst"), py::arg("batch_index") = 0,
           py::arg("size") = -1, py::arg("src_offset") = py::none(),
           py::arg("dst_offset") = py::none(), py::arg("src_layers") = py::none(),
           py::arg("dst_layers") = py::none(), py::arg("tensors_per_layer") = 2,
           py::arg("src_blocks") = std::vector<uint64_t>(),
           py::arg("dst_blocks") = std::vector<uint64_t>(), py::arg("timeout_ms") = py::none(),
           py::arg("keep_keys") = false)
      .def("copy_cache", &PyDataDist::copy_cache, py::arg("dst"), py::arg("src"),
           py::arg("dst_batch_index") = 0, py::arg("src_batch_index") = 0, py::arg("offset") = 0,
           py::arg("size") = -1)
      .def("copy_blocks", &PyDataDist::copy_blocks, py::arg("cache"), py::arg("pairs"))
      .def("swap_blocks", &PyDataDist::swap_blocks, py::arg("src"), py::arg("dst"),
           py::arg("pairs"))
      .def("read_tensor", &PyDataDist::read_tensor, py::arg("cache"), py::arg("index"))
      .def("register", &PyDataDist::register_cache, py::arg("num_tensors"), py::arg("shape"),
           py::arg("dtype"), py::arg("addrs"), py::arg("blocks"), py::arg("tensors_per_layer") = 2)
      .def("deallocate", &PyDataDist::deallocate, py::arg("cache_id"))
      .def("transfer", &PyDataDist::transfer, py::arg("cache_id"), py::arg("num_tensors"),
           py::arg("shape"), py::arg("dtype"), py::arg("batch_dim_index"), py::arg("addrs"),
           py::arg("synchronizer"), py::arg("configs"), py::arg("src_blocks"),
           py::arg("dst_blocks"), py::arg("dst_block_size"),
           py::arg("sync_timeout_ms") = py::none(), py::arg("unbounded") = false,
           py::arg("exclusive") = false, py::arg("tensors_per_layer") = 2,
           py::arg("dst_keys") = std::vector<std::optional<KeyedDst>>())
      .def("push", &PyDataDist::push, py::arg("src"), py::arg("key"),
           py::arg("src_batch_index") = 0, py::arg("src_layers") = py::none(),
           py::arg("dst_layers") = py::none(), py::arg("tensors_per_layer") = 2,
           py::arg("src_blocks") = std::vector<uint64_t>(),
           py::arg("dst_blocks") = std::vector<uint64_t>(), py::arg("timeout_ms") = py::none())
      .def("wait_layer", &PyDataDist::wait_layer, py::arg("cache_id"), py::arg("layer"),
           py::arg("timeout_ms"))
      .def("reset_arrivals", &PyDataDist::reset_arrivals, py::arg("cache_id"))
      .def("pool_bytes_in_use", &PyDataDist::pool_bytes_in_use)
      .def("send_message", &PyDataDist::send_message, py::arg("cluster_id"), py::arg("payload"))
      .def("receive_messages", &PyDataDist::receive_messages, py::arg("max_messages"),
           py::arg("timeout_ms"))
      .def("dropped_messages", &PyDataDist::dropped_messages);
}
