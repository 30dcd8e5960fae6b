// A step stream: the rows of a whole-sequence buffer (T,B,W) handed from one kernel call to
// another running at the same time, step by step, for the wavefront schedule of a stack
// (rnncore/wavefront.py: each layer's call on its own thread).
//
// Forward, layer l publishes h_t ⊙ mask_t (its output with the dropout mask applied) after each
// step and layer l+1 reads its input rows from the buffer once they are published. Backward,
// layer l+1 publishes its dx rows ⊙ mask (the dy of layer l) from the last step down and layer
// l reads them. `done` counts the published steps (forward: steps 0..done-1; backward: the last
// `done` steps); the producer's writes happen before its release store, the consumer's reads
// after its acquire load.
//
// A producer that fails before it publishes everything calls fail(): the consumer's waits then
// return at once, it finishes on whatever the buffer holds, and its binding raises instead of
// returning results (no consumer can hang on a dead producer).
#pragma once

#include <atomic>
#include <climits>
#include <cstddef>
#include <thread>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace rnncore {

struct StepStream {
  void *rows = nullptr;        // (T,B,W) the buffer, of the calls' dtype
  const void *mask = nullptr;  // (T,B,W) applied by the producer as it writes, or nullptr
  std::atomic<int> done{0};
  std::atomic<bool> failed{false};

  void publish(int steps) { done.store(steps, std::memory_order_release); }
  void fail() {
    failed.store(true, std::memory_order_relaxed);
    done.store(INT_MAX, std::memory_order_release);
  }
  // Until `steps` are published: spins a while (the producer is usually a step ahead), then
  // yields, so that more workers than cores still make progress.
  void wait(int steps) const {
    for (int spins = 0; done.load(std::memory_order_acquire) < steps; ++spins) {
      if (spins < 4096) {
#if defined(__x86_64__) || defined(_M_X64)
        _mm_pause();
#endif
      } else {
        std::this_thread::yield();
      }
    }
  }
  // A producer's publication: `steps` done, unless the stream it reads failed, in which case
  // this one fails too (what it wrote came from invalid rows), before its reader can see the
  // steps as done.
  void relay(int steps, const StepStream *from) {
    if (from && from->failed.load(std::memory_order_relaxed))
      fail();
    else
      publish(steps);
  }
  template <typename T>
  T *data() const {
    return static_cast<T *>(rows);
  }
  template <typename T>
  const T *mask_data() const {
    return static_cast<const T *>(mask);
  }
};

// dst[i] = src[i] * mask[i] (or src[i]) for n values: a producer's rows into a stream.
template <typename T>
void write_masked(T *dst, const T *src, const T *mask, std::ptrdiff_t n) {
  if (mask) {
#pragma omp simd
    for (std::ptrdiff_t i = 0; i < n; ++i) dst[i] = src[i] * mask[i];
  } else {
#pragma omp simd
    for (std::ptrdiff_t i = 0; i < n; ++i) dst[i] = src[i];
  }
}

// Step t's rows (B of width W) of src, columns [j0, j1), into the stream's buffer (T,B,W),
// times its mask: a thread's own columns, after it computed them.
template <typename T>
void stream_rows(StepStream &st, const T *src, int t, int B, int W, int j0, int j1) {
  const std::ptrdiff_t base = static_cast<std::ptrdiff_t>(t) * B * W;
  for (int b = 0; b < B; ++b) {
    const std::ptrdiff_t r = base + static_cast<std::ptrdiff_t>(b) * W + j0;
    write_masked(st.data<T>() + r, src + static_cast<std::ptrdiff_t>(b) * W + j0,
                 st.mask ? st.mask_data<T>() + r : nullptr, j1 - j0);
  }
}

}  // namespace rnncore
