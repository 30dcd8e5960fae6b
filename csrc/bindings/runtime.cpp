// The runtime: thread count, the vendored BLAS, the float32 recurrent kernel, the pool.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

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
  m.def("_pool_bytes", [] { return pool_bytes(); }, "Bytes held by the workspace pool.");
  m.def("_empty_pool", [] { return empty_pool(); }, "Free the workspace pool; returns bytes.");
}

}  // namespace rnncore::bindings
