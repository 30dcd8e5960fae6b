// The runtime: thread count, the vendored BLAS, the float32 recurrent kernel, the pool.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/bindings.h"
#include "bindings/validate.h"
#include "common/blas.h"
#include "common/packed_gemm.h"
#include "common/threading.h"
#include "common/workspace.h"

namespace rnncore::bindings {

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
  m.def("get_num_threads", &num_threads,
        "Number of threads rnncore's kernels use: set_num_threads(), else OMP_NUM_THREADS, else "
        "all cores.");
  m.def(
      "blas_info",
      [] {
        py::dict d;
        d["corename"] = std::string(scipy_openblas_get_corename());
        d["config"] = std::string(scipy_openblas_get_config());
        d["blas_threads"] = scipy_openblas_get_num_threads();
        d["recurrent_kernel"] = std::string(gemm_path_name(gemm_path()));
        return d;
      },
      "The vendored OpenBLAS: {'corename': kernel in use (OPENBLAS_CORETYPE respected), "
      "'config': build configuration, 'blas_threads': its own thread count (always 1)}.");
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
  m.def("_pool_bytes", [] { return pool_bytes(); }, "Bytes held by the workspace pool.");
  m.def("_empty_pool", [] { return empty_pool(); }, "Free the workspace pool; returns bytes.");
}

}  // namespace rnncore::bindings
