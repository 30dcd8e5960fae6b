// Variable lengths: the packed layout of PyTorch's packed sequences, internal to a call.
//
// The batch rows are sorted by length, longest first (stable), and the rows that run are packed
// time-major in reading order: step s has n_s active rows, the first n_s of the sorted order
// (n_s is non-increasing), at packed rows [off[s], off[s+1]). Every whole-sequence product
// (input projection, dW, dx) then runs over the N = sum(lengths) packed rows only, and step s's
// recurrent GEMM and pointwise pass over its n_s rows; h_{s-1} of sorted row i is row i of
// step s-1 (a prefix). reverse reads element b's steps from x[len-1] back to x[0].
//
// Shape legend: T steps, B batch, N packed rows, w a row's width.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <numeric>

#include "common/threading.h"

namespace rnncore {

struct SeqOrder {
  const int *off;   // (T+1) packed row offset of each step; off[T] = N
  const int *perm;  // (B) the caller's batch row of sorted row i
  const int *len;   // (B) the length of sorted row i (non-increasing)
  int steps;        // steps with at least one active row: the longest length
  bool reverse;
  // The time position that step s of sorted row i reads and writes.
  int time(int s, int i) const { return reverse ? len[i] - 1 - s : s; }
};

// The layout for `lengths` (B values in [0, T], checked by the caller) into off (T+1), perm and
// len (B).
inline SeqOrder make_order(int *off, int *perm, int *len, const std::int64_t *lengths, int T, int B,
                           bool reverse) {
  std::iota(perm, perm + B, 0);
  std::stable_sort(perm, perm + B, [&](int a, int b) { return lengths[a] > lengths[b]; });
  for (int i = 0; i < B; ++i) len[i] = static_cast<int>(lengths[perm[i]]);
  off[0] = 0;
  int active = B;
  for (int s = 0; s < T; ++s) {
    while (active > 0 && len[active - 1] <= s) --active;
    off[s + 1] = off[s] + active;
  }
  return {off, perm, len, B > 0 ? len[0] : 0, reverse};
}

// dst (N, w) = the rows of src (T, B, w) that run, packed in reading order.
// Large copies are split over the kernels' threads by steps (each step's rows are its own): on
// one thread they kept a random-length RNN batch at medium size and 2 threads at 0.66x the
// full batch's time. Plain copies: the result does not depend on the split.
inline int copy_threads(std::ptrdiff_t elems, int steps) {
  return threads_for(static_cast<double>(elems), steps, 1 << 16);
}

template <typename E>
void pack_rows(E *dst, const E *src, std::ptrdiff_t w, const SeqOrder &o, int B) {
#pragma omp parallel for schedule(static) num_threads(copy_threads(o.off[o.steps] * w, o.steps))
  for (int s = 0; s < o.steps; ++s)
    for (int r = o.off[s], i = 0; r < o.off[s + 1]; ++r, ++i)
      std::memcpy(dst + r * w,
                  src + (static_cast<std::ptrdiff_t>(o.time(s, i)) * B + o.perm[i]) * w,
                  static_cast<std::size_t>(w) * sizeof(E));
}

// dst (T, B, w) = src (N, w) at the positions the rows were read from, zeros elsewhere.
template <typename E>
void unpack_rows(E *dst, const E *src, std::ptrdiff_t w, const SeqOrder &o, int T, int B) {
  const std::ptrdiff_t step = static_cast<std::ptrdiff_t>(B) * w;  // one time step of dst
#pragma omp parallel num_threads(copy_threads(T *step, T))
  {
#pragma omp for schedule(static)
    for (int t = 0; t < T; ++t) std::fill(dst + t * step, dst + (t + 1) * step, E(0));
#pragma omp for schedule(static)
    for (int s = 0; s < o.steps; ++s)
      for (int r = o.off[s], i = 0; r < o.off[s + 1]; ++r, ++i)
        std::memcpy(dst + (static_cast<std::ptrdiff_t>(o.time(s, i)) * B + o.perm[i]) * w,
                    src + r * w, static_cast<std::size_t>(w) * sizeof(E));
  }
}

// dst (B, w) in sorted order = src (B, w) in the caller's, or zeros where src is nullptr.
template <typename E>
void sort_rows(E *dst, const E *src, std::ptrdiff_t w, const SeqOrder &o, int B) {
  for (int i = 0; i < B; ++i) {
    E *d = dst + i * w;
    if (src)
      std::memcpy(d, src + o.perm[i] * w, static_cast<std::size_t>(w) * sizeof(E));
    else
      std::fill(d, d + w, E(0));
  }
}

// dst (B, w) in the caller's order = src (B, w) in sorted order.
template <typename E>
void unsort_rows(E *dst, const E *src, std::ptrdiff_t w, const SeqOrder &o, int B) {
  for (int i = 0; i < B; ++i)
    std::memcpy(dst + o.perm[i] * w, src + i * w, static_cast<std::size_t>(w) * sizeof(E));
}

// dst (B, w) in the caller's order = each row's state after its own last step (packed (N, w)),
// or its initial state (sorted (B, w)) when its length is 0.
template <typename E>
void final_rows(E *dst, const E *init, const E *packed, std::ptrdiff_t w, const SeqOrder &o,
                int B) {
  for (int i = 0; i < B; ++i) {
    const E *src = o.len[i] > 0 ? packed + (o.off[o.len[i] - 1] + i) * w : init + i * w;
    std::memcpy(dst + o.perm[i] * w, src, static_cast<std::size_t>(w) * sizeof(E));
  }
}

}  // namespace rnncore
