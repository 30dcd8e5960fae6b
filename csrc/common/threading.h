// One thread pool: OpenMP. The vendored OpenBLAS is pinned to one thread at import, and every
// parallel kernel splits its work so that each OpenMP thread calls single-threaded BLAS on its
// own partition (two pools both at two threads ran ~10x slower than serial on this machine).
#pragma once

#include <algorithm>
#include <cstdint>

namespace rnncore {

// Threads the kernels may use: OMP_NUM_THREADS (through omp_get_max_threads) or all cores, until
// set_num_threads() changes it. Independent of omp_set_num_threads, so rnncore never changes
// what other OpenMP users in the process see.
int num_threads();
void set_num_threads(int n);
// A cap on num_threads() for the calling OS thread only (0: none), so that several Python threads
// can each run kernels on their own share of the cores (the wavefront schedule of a stack,
// rnncore/wavefront.py). Returns the previous cap.
int set_thread_limit(int n);

// Called once at import: OpenBLAS at one thread, thread count initialised from the environment.
void init_threading();

// Put the vendored OpenBLAS back at one thread if something changed it (threadpoolctl's
// threadpool_limits sees it as an ordinary OpenBLAS and may raise it): OpenBLAS's pthreads
// inside rnncore's OpenMP threads oversubscribe the cores, ~10x slower. A read of a global
// when nothing changed; called before every compute call, with the GIL held.
void ensure_blas_serial();

// Threads worth using for a job of `flops` floating-point operations split into at most
// `max_parts` parts: a fork/join or barrier costs about a microsecond, so each thread should
// get at least `min_flops_per_thread` of work.
inline int threads_for(double flops, int max_parts, double min_flops_per_thread = 1.0e5) {
  const int by_work = static_cast<int>(flops / min_flops_per_thread);
  return std::max(1, std::min({num_threads(), max_parts, by_work}));
}

// Half-open range [begin, end) of part `p` of `parts` over n items, boundaries on multiples of
// `align` (so two threads never write the same cache line of a row), the remainder spread.
struct Range {
  int begin, end;
};
inline Range split(int n, int parts, int p, int align) {
  const int blocks = (n + align - 1) / align;
  const int base = blocks / parts, extra = blocks % parts;
  const int b0 = p * base + std::min(p, extra);
  const int b1 = b0 + base + (p < extra ? 1 : 0);
  return {std::min(n, b0 * align), std::min(n, b1 * align)};
}

}  // namespace rnncore
