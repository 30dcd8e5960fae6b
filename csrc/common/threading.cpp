#include "common/threading.h"

#include <omp.h>

#include <atomic>

#include "common/blas.h"

namespace rnncore {

namespace {
std::atomic<int> g_num_threads{1};
thread_local int t_thread_limit = 0;  // 0: none
}  // namespace

int num_threads() {
  const int n = g_num_threads.load(std::memory_order_relaxed);
  return t_thread_limit > 0 ? std::min(n, t_thread_limit) : n;
}

int set_thread_limit(int n) {
  const int previous = t_thread_limit;
  t_thread_limit = std::max(0, n);
  return previous;
}

void set_num_threads(int n) {
  g_num_threads.store(std::max(1, n), std::memory_order_relaxed);
}

void init_threading() {
  // Our private copy of OpenBLAS (its own SONAME): this does not touch NumPy's or SciPy's.
  scipy_openblas_set_num_threads(1);
  g_num_threads.store(std::max(1, omp_get_max_threads()), std::memory_order_relaxed);
}

void ensure_blas_serial() {
  if (scipy_openblas_get_num_threads() != 1) scipy_openblas_set_num_threads(1);
}

}  // namespace rnncore
