// The runtime: thread count, the vendored BLAS, the float32 recurrent kernel, workspace pools.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <memory>
#include <string>

#include "bindings/bindings.h"
#include "bindings/validate.h"
#include "common/activations.h"
#include "common/blas.h"
#include "common/packed_gemm.h"
#include "common/pointwise.h"
#include "common/threading.h"
#include "common/workspace.h"

namespace rnncore::bindings {

namespace {

const char *kPoolDoc = R"doc(Buffers that rnncore's kernels reuse across calls, owned by one object.

Inside ``with pool:`` every buffer a kernel call allocates on this thread -- the cache a
training forward returns, the backward's scratch, the arrays the call returns -- comes from
this pool where it holds a freed buffer of the size (within 2x), and goes back to it when freed.
A loop that calls kernels of the same shapes over and over then reuses memory that is already
faulted in, instead of having glibc map and unmap it on every call. Each rnncore layer and
model holds its own pool; there is no process-wide one. Outside any ``with`` a call allocates
plainly and frees at release.

Args:
    max_blocks: most freed buffers kept (the oldest are freed first), default 64.
    max_bytes: most bytes kept, default 1 GiB.

Thread-safe; a ``with`` applies to the thread that entered it. Nesting makes the innermost
pool current.
)doc";

// A new, empty pool with p's limits: what a copy of a pool is.
std::shared_ptr<BlockPool> empty_like(const BlockPool &p) {
  return std::make_shared<BlockPool>(p.max_blocks(), p.max_bytes());
}

void bind_workspace_pool(py::module_ &m) {
  py::class_<BlockPool, std::shared_ptr<BlockPool>>(m, "WorkspacePool", kPoolDoc)
      .def(py::init([](py::object max_blocks, py::object max_bytes) {
             const auto count = [](py::object v, const char *name) -> std::size_t {
               if (!py::isinstance<py::int_>(v) || py::isinstance<py::bool_>(v))
                 throw py::type_error(std::string("WorkspacePool: ") + name +
                                      " must be an int, got " + type_name(v));
               const long long n = v.cast<long long>();
               if (n < 0)
                 throw py::value_error(std::string("WorkspacePool: ") + name +
                                       " must be >= 0, got " + std::to_string(n));
               return static_cast<std::size_t>(n);
             };
             return std::make_shared<BlockPool>(count(max_blocks, "max_blocks"),
                                                count(max_bytes, "max_bytes"));
           }),
           py::arg("max_blocks") = 64, py::arg("max_bytes") = std::size_t(1) << 30)
      .def_property_readonly(
          "nbytes", [](const BlockPool &p) { return p.stats().bytes; },
          "Bytes of freed buffers the pool keeps now.")
      .def_property_readonly(
          "blocks", [](const BlockPool &p) { return p.stats().blocks; },
          "Freed buffers the pool keeps now.")
      .def_property_readonly(
          "reused", [](const BlockPool &p) { return p.stats().reused; },
          "Buffer requests served from the pool so far.")
      .def_property_readonly(
          "allocated", [](const BlockPool &p) { return p.stats().fresh; },
          "Buffer requests that found nothing to reuse and allocated.")
      .def("clear", &BlockPool::clear, "Free every kept buffer; returns the bytes freed.")
      .def(
          "__enter__",
          [](std::shared_ptr<BlockPool> self) {
            push_pool(self);
            return self;
          },
          "Make this the calling thread's current pool.")
      .def(
          "__exit__",
          [](BlockPool &self, const py::args &) {
            if (!pop_pool(&self))
              throw py::value_error(
                  "WorkspacePool.__exit__: this pool is not the calling thread's innermost "
                  "current pool (exit the pools in the reverse order of entering them, on the "
                  "thread that entered them)");
            return false;
          },
          "Restore the pool that was current before.")
      // A copy (copy, deepcopy, pickle: a layer or module that holds a pool) is a new, empty
      // pool with the same limits: buffers belong to their owner and are never shared.
      .def("__copy__", &empty_like)
      .def(
          "__deepcopy__", [](const BlockPool &p, py::handle) { return empty_like(p); },
          py::arg("memo"))
      .def(py::pickle(
          [](const BlockPool &p) { return py::make_tuple(p.max_blocks(), p.max_bytes()); },
          [](const py::tuple &t) {
            if (t.size() != 2) throw py::value_error("WorkspacePool: bad pickled state");
            return std::make_shared<BlockPool>(t[0].cast<std::size_t>(), t[1].cast<std::size_t>());
          }))
      .def("__repr__", [](const BlockPool &p) {
        const auto s = p.stats();
        return "<WorkspacePool " + std::to_string(s.blocks) + " buffers, " +
               std::to_string(s.bytes) + " bytes kept; " + std::to_string(s.reused) + " reused, " +
               std::to_string(s.fresh) + " allocated>";
      });
}

}  // namespace

void bind_runtime(py::module_ &m) {
  m.def(
      "set_num_threads",
      [](py::object n) {
        if (!py::isinstance<py::int_>(n) || py::isinstance<py::bool_>(n))
          throw py::type_error("set_num_threads: n must be an int, got " + type_name(n));
        const long long v = n.cast<long long>();
        if (v < 1 || v > 4096)
          throw py::value_error("set_num_threads: n must be between 1 and 4096, got " +
                                std::to_string(v));
        set_num_threads(static_cast<int>(v));
      },
      py::arg("n"),
      "Set the number of OpenMP threads rnncore's kernels use (n >= 1).\n\n"
      "Affects only rnncore: OMP_NUM_THREADS and other OpenMP users in the process are left "
      "alone.");
  m.def(
      "_set_thread_limit",
      [](int n) {
        if (n < 0 || n > 4096)
          throw py::value_error("_set_thread_limit: n must be between 0 and 4096, got " +
                                std::to_string(n));
        return set_thread_limit(n);
      },
      py::arg("n"),
      "Cap the threads of the kernels this OS thread calls at n (0: no cap, "
      "get_num_threads() applies); returns the previous cap. Internal: the wavefront schedule "
      "of a stack runs each layer on its own Python thread with its share of the cores.");
  m.def("get_num_threads", &num_threads,
        "Number of threads rnncore's kernels use: set_num_threads(), else OMP_NUM_THREADS, else "
        "all cores (at most the calling thread's _set_thread_limit cap).");
  m.def(
      "blas_info",
      [] {
        py::dict d;
        d["corename"] = std::string(scipy_openblas_get_corename());
        d["config"] = std::string(scipy_openblas_get_config());
        d["blas_threads"] = scipy_openblas_get_num_threads();
        d["recurrent_kernel"] = std::string(gemm_path_name(gemm_path()));
        d["pointwise_kernel"] = std::string(pointwise_path_name(pointwise_path()));
        return d;
      },
      "The vendored OpenBLAS: {'corename': kernel in use (OPENBLAS_CORETYPE respected), "
      "'config': build configuration, 'blas_threads': its own thread count (always 1)}, and "
      "rnncore's float32 kernels: 'recurrent_kernel' (the step product) and 'pointwise_kernel' "
      "(the pointwise passes), each 'avx512', 'avx2' or 'portable'.");
  m.def(
      "_set_gemm_path",
      [](const std::string &name) {
        for (GemmPath p : {GemmPath::Blas, GemmPath::Portable, GemmPath::Avx2, GemmPath::Avx512})
          if (name == gemm_path_name(p)) {
            if (!set_gemm_path(p))
              throw py::value_error(std::string("_set_gemm_path: this CPU cannot run '") + name +
                                    "' (best: '" + gemm_path_name(best_gemm_path()) + "')");
            return;
          }
        throw py::value_error(
            "_set_gemm_path: name must be 'blas', 'portable', 'avx2' or "
            "'avx512', got '" +
            name + "'");
      },
      py::arg("name"), "Choose the float32 recurrent-product kernel (for tests and benchmarks).");
  m.def(
      "_gemm_path", [] { return std::string(gemm_path_name(gemm_path())); },
      "The float32 recurrent-product kernel in use.");
  m.def(
      "_set_pointwise_path",
      [](const std::string &name) {
        for (PointwisePath p :
             {PointwisePath::Portable, PointwisePath::Avx2, PointwisePath::Avx512})
          if (name == pointwise_path_name(p)) {
            if (!set_pointwise_path(p))
              throw py::value_error(std::string("_set_pointwise_path: this CPU cannot run '") +
                                    name + "' (best: '" +
                                    pointwise_path_name(best_pointwise_path()) + "')");
            return;
          }
        throw py::value_error(
            "_set_pointwise_path: name must be 'portable', 'avx2' or 'avx512', got '" + name + "'");
      },
      py::arg("name"), "Choose the float32 pointwise kernels (for tests and benchmarks).");
  m.def(
      "_pointwise_path", [] { return std::string(pointwise_path_name(pointwise_path())); },
      "The float32 pointwise kernels in use.");
  m.def(
      "_activation",
      [](const std::string &name, py::array_t<float, py::array::c_style | py::array::forcecast> x) {
        if (name != "tanh" && name != "sigmoid")
          throw py::value_error("_activation: name must be 'tanh' or 'sigmoid', got '" + name +
                                "'");
        py::array_t<float> y(x.request().shape);
        const float *src = x.data();
        float *dst = y.mutable_data();
        const std::ptrdiff_t n = x.size();
        if (const PointwiseKernels *pk = pointwise_kernels())
          (name == "tanh" ? pk->tanh : pk->sigmoid)(dst, src, n);
        else if (name == "tanh")
          for (std::ptrdiff_t i = 0; i < n; ++i) dst[i] = tanh_f(src[i]);
        else
          for (std::ptrdiff_t i = 0; i < n; ++i) dst[i] = sigmoid_f(src[i]);
        return y;
      },
      py::arg("name"), py::arg("x"),
      "float32 tanh or sigmoid of x on the pointwise path in use (for tests).");
  bind_workspace_pool(m);
}

}  // namespace rnncore::bindings
