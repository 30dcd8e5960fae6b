// The machine's float32 GEMM ceiling, measured the way the kernels use it, for the benchmark
// report (private: rnncore._core._gemm_probe).
//
//   C (M x N) = A (M x K) . W^T,   W (N x K) row-major, like w_hh in h W_hh^T
//
// `threads` OpenMP threads each own a slice of N (16-aligned, as the cells split their gate
// columns) inside one parallel region, and repeat the product `calls` times with a barrier after
// each one: the recurrent step's pattern. kernel "blas" sends each slice to the vendored
// OpenBLAS (one thread, as everywhere in rnncore); "packed" packs the slice once and runs the
// micro-kernel rnncore's float32 recurrent products use (gemm_path(): avx512, avx2 or portable,
// whichever this CPU runs best unless set otherwise). With a large square shape this is the plain
// sgemm ceiling; with (B, G*H, H) it is the ceiling of one recurrent step.
#include <omp.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bindings/bindings.h"
#include "common/packed_gemm.h"
#include "common/step_gemm.h"
#include "common/threading.h"
#include "lm/sample.h"

namespace py = pybind11;

namespace rnncore {

namespace {

using idx = std::ptrdiff_t;
using Clock = std::chrono::steady_clock;

// Seconds for `calls` products in one region. "packed" packs each thread's slice through the
// cells' own PackArena (not timed: the kernels pack once per sequence).
double run_calls(bool packed, float *c, const float *a, const float *w, int M, int N, int K,
                 int threads, long calls) {
  const PackArena<float> arena(K, packed ? N : 0, threads);
  double seconds = 0.0;
#pragma omp parallel num_threads(threads)
  {
    const int np = omp_get_num_threads(), p = omp_get_thread_num();
    const Range r = split(N, np, p, 16);
    const StepGemm<float> step =
        packed ? arena.slice(w, K, true, r.begin, r.end, p)
               : StepGemm<float>(w, K, true, K, r.begin, r.end, nullptr, GemmPath::Blas);
#pragma omp barrier
    const auto t0 = Clock::now();
    for (long i = 0; i < calls; ++i) {
      step.run(c, N, a, K, M, false);
#pragma omp barrier
    }
#pragma omp master
    seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  }
  return seconds;
}

void check_min_time(const std::string &fn, double min_time) {
  if (!(min_time > 0.0 && min_time <= 60.0))
    throw py::value_error(fn + ": min_time must be in (0, 60] seconds, got " +
                          std::to_string(min_time));
}

// run(calls) times `calls` repetitions and returns their seconds. Grows the call count until
// one run lasts min_time; returns that run's seconds and calls.
template <typename Run>
std::pair<double, long> time_for(const Run &run, double min_time) {
  for (long calls = 1;;) {
    const double seconds = run(calls);
    if (seconds >= min_time) return {seconds, calls};
    const double per = seconds / static_cast<double>(calls);
    const long want = per > 0 ? static_cast<long>(1.2 * min_time / per) + 1 : calls * 10;
    calls = std::max(calls * 2, std::min(want, calls * 100));
  }
}

py::dict gemm_probe(int M, int N, int K, const std::string &kernel, int threads, double min_time) {
  const std::string fn = "_gemm_probe";
  if (M < 1 || N < 1 || K < 1)
    throw py::value_error(fn + ": M, N and K must be >= 1, got " + std::to_string(M) + ", " +
                          std::to_string(N) + ", " + std::to_string(K));
  if (kernel != "blas" && kernel != "packed")
    throw py::value_error(fn + ": kernel must be 'blas' or 'packed', got '" + kernel + "'");
  if (threads < 1)
    throw py::value_error(fn + ": threads must be >= 1, got " + std::to_string(threads));
  check_min_time(fn, min_time);
  const bool packed = kernel == "packed";
  std::vector<float> a(static_cast<std::size_t>(M) * K), w(static_cast<std::size_t>(N) * K),
      c(static_cast<std::size_t>(M) * N);
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i % 7) * 0.125f - 0.375f;
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(i % 5) * 0.25f - 0.5f;
  ensure_blas_serial();
  const auto run = [&](long calls) {
    return run_calls(packed, c.data(), a.data(), w.data(), M, N, K, threads, calls);
  };
  std::pair<double, long> timed;
  {
    py::gil_scoped_release nogil;
    run(1);  // warm up: threads started, caches filled
    timed = time_for(run, min_time);
  }
  const auto [seconds, calls] = timed;
  // A ceiling is only a figure if the product is right: check a spread of entries of C against
  // a float64 dot product (float32 sums of K terms of magnitude <= 0.375 * 0.5).
  for (int s = 0; s < 64; ++s) {
    const idx i = (static_cast<idx>(s) * 7919) % M, j = (static_cast<idx>(s) * 104729) % N;
    double ref = 0.0;
    for (idx k = 0; k < K; ++k) ref += static_cast<double>(a[i * K + k]) * w[j * K + k];
    const double got = c[i * N + j], tol = 1e-5 * 0.1875 * K + 1e-6;
    if (!(std::abs(got - ref) <= tol))
      throw std::runtime_error(fn + ": wrong product at C[" + std::to_string(i) + ", " +
                               std::to_string(j) + "]: " + std::to_string(got) + ", expected " +
                               std::to_string(ref));
  }
  const double flops = 2.0 * M * N * K * static_cast<double>(calls);
  py::dict d;
  d["gflops"] = flops / seconds / 1e9;
  d["calls"] = calls;
  d["seconds"] = seconds;
  d["kernel"] = packed ? std::string(gemm_path_name(gemm_path())) : std::string("openblas");
  d["threads"] = threads;
  return d;
}

// The sampler's matrix-vector ceiling: GB/s of float32 weights streamed by repeated y = W x.
py::dict gemv_probe_py(int rows, int cols, double min_time) {
  const std::string fn = "_gemv_probe";
  if (rows < 1 || cols < 1)
    throw py::value_error(fn + ": rows and cols must be >= 1, got " + std::to_string(rows) + ", " +
                          std::to_string(cols));
  check_min_time(fn, min_time);
  std::pair<double, long> timed;
  {
    py::gil_scoped_release nogil;
    timed = time_for([&](long calls) { return gemv_probe(rows, cols, calls); }, min_time);
  }
  const auto [seconds, calls] = timed;
  const double bytes = 4.0 * rows * cols * static_cast<double>(calls);
  py::dict d;
  d["seconds_per_call"] = seconds / static_cast<double>(calls);
  d["gb_per_s"] = bytes / seconds / 1e9;
  d["calls"] = calls;
  return d;
}

}  // namespace

namespace bindings {

void bind_probe(py::module_ &m) {
  m.def("_gemv_probe", &gemv_probe_py, py::arg("rows"), py::arg("cols"), py::arg("min_time") = 0.2,
        "Private (benchmarks): the sampler's float32 matrix-vector kernel on one thread, y = W x "
        "repeated for a (rows, cols) W, each call depending on the last. Returns "
        "{seconds_per_call, gb_per_s, calls}.");
  m.def("_gemm_probe", &gemm_probe, py::arg("M"), py::arg("N"), py::arg("K"), py::arg("kernel"),
        py::arg("threads"), py::arg("min_time") = 0.2,
        "Private (benchmarks): float32 GFLOP/s of C (M,N) = A (M,K) . W^T (W (N,K)) repeated in "
        "one parallel region of `threads` threads, each owning a 16-aligned slice of N, a "
        "barrier after each product; kernel 'blas' (vendored OpenBLAS, one thread per slice) "
        "or 'packed' (rnncore's micro-kernel). Returns {gflops, calls, seconds, kernel, "
        "threads}.");
}

}  // namespace bindings

}  // namespace rnncore
