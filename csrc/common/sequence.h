// What every cell shares around its loop over time: the sizes of a call, the buffers every
// cell keeps for its backward, and the scaffolding of the parallel region (the thread's slice,
// the upstream gradients, the empty sequence, the bias sums, the dx split).
//
// Shape legend: T steps, B batch, D input size, H hidden size, G gates (1 RNN, 4 LSTM, 3 GRU).
#pragma once

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <numeric>
#include <type_traits>
#include <utility>

#include "common/blas.h"
#include "common/gates.h"
#include "common/packing.h"
#include "common/step_gemm.h"
#include "common/threading.h"
#include "common/workspace.h"

namespace rnncore {

using idx = std::ptrdiff_t;

// The sizes of a call and its step schedule: step t runs `rows(t)` rows from row `row0(t)` of
// every per-step buffer ((T,B,·) without lengths, the packed (N,·) rows with them, where the
// rows are sorted by length: common/packing.h). Buffers stay sized by T*B.
struct SeqSizes {
  int T, B, D, H;
  const SeqOrder *order = nullptr;  // lengths: the packed layout; nullptr: every length is T
  idx BH() const { return static_cast<idx>(B) * H; }
  int TB() const { return T * B; }  // checked <= INT_MAX at the boundary
  int row0(int t) const { return order ? order->off[t] : t * B; }
  idx at(int t) const { return row0(t); }  // row0 as an index, for pointer arithmetic
  int rows(int t) const { return order ? order->off[t + 1] - order->off[t] : B; }
  int steps() const { return order ? order->steps : T; }   // steps with an active row
  int N() const { return order ? order->off[T] : T * B; }  // rows that run
};

// No step, or no state: nothing flows through time (the forward writes nothing).
inline bool empty_sequence(SeqSizes n) {
  return n.T == 0 || n.B == 0 || n.H == 0 || n.N() == 0;
}

// A forward call's arguments in PyTorch's layout; nullptr where absent (c0: LSTM only).
template <typename T>
struct SeqInputs {
  const T *x;               // (T,B,D), or nullptr for one-hot input
  const std::int32_t *ids;  // (T,B) token ids in [0, D), or nullptr (common/input.h)
  const T *h0, *c0;         // (B,H)
  const T *w_ih;            // (G*H,D)
  const T *w_hh;            // (G*H,H)
  const T *b_ih, *b_hh;     // (G*H)
  bool x_later = false;     // x is a stream's rows, not written yet: the binding copies it later
};

// The buffers every cell keeps from its forward for its backward (its own follow them).
template <typename T>
struct SeqBuffers {
  T *x;               // (T,B,D) copy of the input, or nullptr for one-hot input
  std::int32_t *ids;  // (T,B) copy of the token ids, or nullptr
  T *w_ih;            // (G*H,D) in the cell's row layout; one-hot input: (D,G*H), its transpose
  T *w_hh;            // (G*H,H) in the cell's row layout
  T *h_states;        // (T+1,B,H) h_0 .. h_T, slot 0 = h0

  static SeqBuffers carve(Carver &c, SeqSizes n, int G, bool one_hot) {
    const std::size_t TB = static_cast<std::size_t>(n.TB()), GH = static_cast<std::size_t>(G) * n.H;
    SeqBuffers s;
    s.x = one_hot ? nullptr : c.take<T>(TB * n.D);
    s.ids = one_hot ? c.take<std::int32_t>(TB) : nullptr;
    s.w_ih = c.take<T>(GH * n.D);
    s.w_hh = c.take<T>(GH * n.H);
    s.h_states = c.take<T>((TB + n.B) * n.H);
    return s;
  }
};

// dst[0, count) = src, split between the threads when it is big: the kept x and y out of the
// kept states are megabytes that one core copies while the other would wait for it (measured:
// 3.5% of the LSTM charrnn-L2 stack's time on 2 threads was this memmove on one of them).
template <typename T>
void copy_parallel(T *dst, const T *src, idx count) {
  const std::size_t bytes = static_cast<std::size_t>(count) * sizeof(T);
  const int nt = std::min<std::size_t>(num_threads(), bytes >> 17);  // >= 128 KB a thread
  if (nt <= 1) {
    std::memcpy(dst, src, bytes);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    // By whole 64-byte lines, so no line is written by two threads (threading.h's split
    // counts in int; a copy here can pass 2^31 elements).
    constexpr idx per_line = 64 / sizeof(T);
    const idx np = omp_get_num_threads(), p = omp_get_thread_num();
    const idx lines = (count + per_line - 1) / per_line;
    const idx b = std::min(count, lines * p / np * per_line),
              e = std::min(count, lines * (p + 1) / np * per_line);
    if (e > b) std::memcpy(dst + b, src + b, static_cast<std::size_t>(e - b) * sizeof(T));
  }
}

// dst[0, count) = src, or zeros where src is nullptr (an absent state or gradient is zero).
template <typename T>
void copy_or_zero(T *dst, const T *src, idx count) {
  if (src)
    std::memcpy(dst, src, static_cast<std::size_t>(count) * sizeof(T));
  else
    std::memset(dst, 0, static_cast<std::size_t>(count) * sizeof(T));
}

// An initial state (B,H) into slot 0 of a state buffer: zeros where absent, rows sorted with
// lengths.
template <typename T>
void keep_state(T *dst, const T *src, SeqSizes n) {
  if (n.order)
    sort_rows(dst, src, n.H, *n.order, n.B);
  else
    copy_or_zero(dst, src, n.BH());
}

// Copies what the backward reads of the input side into the kept buffers: x (or the ids) and h0
// (zeros where absent) in slot 0 of h_states; with lengths packed (common/packing.h). The
// weights are the cell's to lay out.
template <typename T>
void keep_inputs(const SeqBuffers<T> &s, const SeqInputs<T> &in, SeqSizes n) {
  keep_state(s.h_states, in.h0, n);
  if (n.order) {
    if (s.ids)
      pack_rows(s.ids, in.ids, 1, *n.order, n.B);
    else
      pack_rows(s.x, in.x, n.D, *n.order, n.B);
    return;
  }
  if (s.ids)
    std::memcpy(s.ids, in.ids, static_cast<std::size_t>(n.TB()) * sizeof(std::int32_t));
  else if (!in.x_later)
    copy_parallel(s.x, in.x, static_cast<idx>(n.TB()) * n.D);
}

// y (T,B,H) = h_1 .. h_T and h_n (B,H) = h_T, from the kept states (slot 0 = the initial
// state). With lengths: y zero past each length, h_n the state after each row's last step.
template <typename T>
void read_states(T *y, T *h_n, const T *states, SeqSizes n) {
  const idx BH = n.BH();
  if (n.order) {
    unpack_rows(y, states + BH, n.H, *n.order, n.T, n.B);
    final_rows(h_n, states, states + BH, n.H, *n.order, n.B);
    return;
  }
  copy_parallel(y, states + BH, n.T * BH);
  std::memcpy(h_n, states + n.T * BH, static_cast<std::size_t>(BH) * sizeof(T));
}
template <typename T>
void read_outputs(T *y, T *h_n, const SeqBuffers<T> &s, SeqSizes n) {
  read_states(y, h_n, s.h_states, n);
}

// The right-hand side of dW_hh: h_{t-1} of every row that ran, (N,H) in the step rows' order,
// columns [j0, j1). Without lengths that is slots 0 .. T-1 of the kept states as they are;
// with them a gather into buf (T*B*H), since step t-1 has more rows than step t.
template <typename T>
const T *prev_states(T *buf, const T *states, SeqSizes n, int j0, int j1) {
  if (!n.order) return states;
  for (int t = 0; t < n.steps(); ++t) {
    const T *src = t == 0 ? states : states + n.BH() + n.at(t - 1) * n.H;
    T *dst = buf + n.at(t) * n.H;
    for (int i = 0; i < n.rows(t); ++i)
      std::memcpy(dst + static_cast<idx>(i) * n.H + j0, src + static_cast<idx>(i) * n.H + j0,
                  static_cast<std::size_t>(std::max(0, j1 - j0)) * sizeof(T));
  }
  return buf;
}

template <typename T>
struct Span {
  T *p;  // nullptr: nothing to fill
  idx n;
};

// The backward of an empty sequence: each state gradient passes through unchanged (dh0 = dh_n,
// zero where absent) and every other gradient (weights, biases, dx) is zero.
template <typename T>
void empty_sequence_grads(std::initializer_list<std::pair<T *, const T *>> passed, idx BH,
                          std::initializer_list<Span<T>> zeroed) {
  for (const auto &[dst, src] : passed) copy_or_zero(dst, src, BH);
  for (const Span<T> &z : zeroed)
    if (z.p) std::fill(z.p, z.p + z.n, T(0));
}

// Threads for a cell's region: the per-step recurrent product is 2*B*G*H*H flops, split by unit
// blocks.
inline int cell_threads(SeqSizes n, int G) {
  return threads_for(2.0 * n.B * G * n.H * n.H, (n.H + kUnitBlock - 1) / kUnitBlock);
}

// This thread's part of a cell's region: hidden units [j0, j1), 16-aligned so that its gate
// columns are contiguous (common/gates.h) and no two threads write one cache line of a row;
// with them the unit blocks [k0, k1). On a grid (row_groups) it owns only the batch rows
// [r0, r1) (in the sorted order with lengths) of those units.
struct ThreadSlice {
  int np, p;   // threads in the region, this thread
  int j0, j1;  // hidden units
  int k0, k1;  // unit blocks
  int r0 = 0;  // batch rows
  int r1 = INT32_MAX;
  int group = 0;       // its row group (which packed copy of the weights it runs on)
  bool shared = true;  // other threads own other units of its rows: a barrier every step

  // Its rows [begin, end) among the rows(t) rows of step t (a row that runs at step t ran at
  // every step before: the same rows of step t-1 are its previous states).
  Range rows(SeqSizes n, int t) const {
    const int m = n.rows(t);
    return {std::min(r0, m), std::min(r1, m)};
  }
};
inline ThreadSlice thread_slice(int H) {
  const int np = omp_get_num_threads(), p = np > 1 ? omp_get_thread_num() : 0;
  const Range r = split(H, np, p, kUnitBlock);
  return {np, p, r.begin, r.end, r.begin / kUnitBlock, (r.end + kUnitBlock - 1) / kUnitBlock};
}

// Row groups of a cell's time loop: `groups` groups of the batch rows, each run by nt/groups
// threads that split the hidden units. A batch row's recurrence never reads another row, so
// with one thread a group (2 threads, B = 50: 25 rows each) the loop needs no barrier at all
// and no state moves between the cores; each thread then multiplies by all G*H columns, on its
// own packed copy of W_hh. Only where every element of a product is the same whatever rows a
// call covers (the packed float32 kernel: common/packed_gemm.h), so the results stay those of
// any other thread count; only while the copy fits a core's L2 with room to spare (512 KB
// here: W_hh for H = 128 LSTM is 256 KB) and each group keeps a full micro-kernel block of
// rows (8). Not on the wavefront (streams publish by columns).
inline int row_groups(SeqSizes n, int G, int nt, bool packed_kernel) {
  if (!packed_kernel || nt <= 1) return 1;
  for (int groups = nt; groups > 1; --groups) {
    if (nt % groups != 0 || n.B / groups < 8) continue;
    const int members = nt / groups;
    const double bytes = 4.0 * n.H * G * ((n.H + members - 1) / members);
    if (bytes <= 512.0 * 1024) return groups;
  }
  return 1;
}

// Whether a cell's products may run on row groups: float32 on the packed kernel, with its input
// side (`input_packed`: W_ih packed too, or one-hot) not on OpenBLAS either.
template <typename T>
bool packed_rows(bool input_packed) {
  return std::is_same_v<T, float> && gemm_path() != GemmPath::Blas && input_packed;
}

// Batch rows [begin, end) of row group g of `groups`: equal counts at full length; with lengths
// equal shares of the rows that run (the longest rows come first, so the first group takes fewer
// of them), so that no group waits at the end for another.
inline Range group_rows(SeqSizes n, int groups, int g) {
  if (groups <= 1) return {0, n.B};
  if (!n.order) return split(n.B, groups, g, 1);
  // ran(b): the row-steps of rows [0, b), sum over t of min(b, rows(t)); the boundary of g is
  // the fewest rows with ran(b) >= g/groups of them all.
  auto ran = [&](int b) {
    idx s = 0;
    for (int t = 0; t < n.steps(); ++t) s += std::min(b, n.rows(t));
    return s;
  };
  auto boundary = [&](int k) {
    if (k <= 0) return 0;
    if (k >= groups) return n.B;
    const idx want = (static_cast<idx>(n.N()) * k + groups - 1) / groups;
    int lo = 0, hi = n.B;
    while (lo < hi) {
      const int mid = (lo + hi) / 2;
      if (ran(mid) >= want)
        hi = mid;
      else
        lo = mid + 1;
    }
    return lo;
  };
  return {boundary(g), boundary(g + 1)};
}

// This thread's slice of a grid of `groups` row groups (row_groups; 1: thread_slice).
inline ThreadSlice grid_slice(SeqSizes n, int groups) {
  const int np = omp_get_num_threads(), p = np > 1 ? omp_get_thread_num() : 0;
  if (groups <= 1 || np % groups != 0) return thread_slice(n.H);
  const int members = np / groups, group = p / members;
  const Range u = split(n.H, members, p % members, kUnitBlock);
  const Range r = group_rows(n, groups, group);
  return {np,
          p,
          u.begin,
          u.end,
          u.begin / kUnitBlock,
          (u.end + kUnitBlock - 1) / kUnitBlock,
          r.begin,
          r.end,
          group,
          members > 1};
}

// The fused step: the step product tile by tile, each tile followed at once by the pointwise
// work that reads it, while it is still in L1 (as oneDNN's post-GEMM fusion). A tile is the
// smallest run of this thread's unit blocks [s.k0, s.k1) whose product columns (cols_per_block
// each: G*16 for a forward's gates, 16 for a backward's dh) fill whole panels of the packed
// kernel; f(k, w) then runs for each block of the tile (for_unit_blocks). On OpenBLAS (float64)
// one product covers every column, then every block. Results are those of one product followed
// by every block: each element of the product is the same dot product either way.
template <typename T, typename F>
void fused_step(const StepGemm<T> &rec, T *c, int ldc, const T *a, int lda, int M, bool acc,
                GateBlocks gb, int cols_per_block, const ThreadSlice &s, F &&f) {
  const int nr = rec.panel();  // a tile: lcm(nr, cols_per_block) columns; OpenBLAS: all blocks
  const int per_tile = nr > 0 ? nr / std::gcd(nr, cols_per_block) : std::max(1, s.k1 - s.k0);
  for (int k = s.k0; k < s.k1; k += per_tile) {
    const int ke = std::min(s.k1, k + per_tile);
    const int units = std::min(gb.H, kUnitBlock * ke) - kUnitBlock * k;  // the last may be short
    rec.run_part(c, ldc, a, lda, M, acc, (k - s.k0) * cols_per_block,
                 units * (cols_per_block / kUnitBlock));
    for_unit_blocks(gb, k, ke, f);
  }
}

// Rows [b0, b1), columns [j0, j1) of dst (B,H) = src, or zeros where src is nullptr.
template <typename T>
void copy_or_zero_block(T *dst, const T *src, int b0, int b1, int H, int j0, int j1) {
  for (int b = b0; b < b1; ++b)
    for (int j = j0; j < j1; ++j) {
      const idx i = static_cast<idx>(b) * H + j;
      dst[i] = src ? src[i] : T(0);
    }
}

// f(std::true_type) when there is an upstream dy, else f(std::false_type): the pointwise loops
// read dh + dy or dh alone with the choice made outside them (GCC vectorises neither a branch
// inside nor a null dy).
template <typename F>
inline void with_dy(const void *dy, F &&f) {
  if (dy)
    f(std::true_type{});
  else
    f(std::false_type{});
}

// Rows [r0, r1), columns [c0, c1) of buf (leading dimension ld) = 0.
template <typename T>
void zero_block(T *buf, idx ld, int r0, int r1, idx c0, idx c1) {
  for (int r = r0; r < r1; ++r) std::fill(buf + r * ld + c0, buf + r * ld + c1, T(0));
}

// dst (rows x cols, leading dimension ldd) += src (leading dimension lds).
template <typename T>
void add_rows(T *dst, idx ldd, const T *src, idx lds, int rows, int cols) {
  for (int i = 0; i < rows; ++i) {
    T *d = dst + i * ldd;
    const T *r = src + i * lds;
#pragma omp simd
    for (int c = 0; c < cols; ++c) d[c] += r[c];
  }
}

// out[c0:c1] = column sums over `rows` rows of src (leading dimension ld): a bias gradient.
template <typename T>
void col_sums(T *out, const T *src, idx rows, idx ld, int c0, int c1) {
  for (int c = c0; c < c1; ++c) out[c] = T(0);
  for (idx i = 0; i < rows; ++i) {
    const T *row = src + i * ld;
#pragma omp simd
    for (int c = c0; c < c1; ++c) out[c] += row[c];
  }
}

// The packed copies of W_ih for dx (K = G*H, N = D): the packed micro-kernel while W_ih fits a
// core's L2 (input_side_packed), OpenBLAS past that; one-hot input has no dx.
template <typename T>
PackCopies<T> dx_copies(int GH, int D, int threads, bool one_hot) {
  return PackCopies<T>(GH, one_hot ? 0 : D, threads, !one_hot && input_side_packed(GH, D));
}

// dx (R,D) = g (R,GH) W_ih (GH,D) over the R rows that ran, this thread's rows: every column of
// g is complete once the time loop is over, so the rows split evenly. Each thread runs on its own
// copy from `copies` (dx_copies). No dx for one-hot input.
template <typename T>
void input_grad_rows(T *dx, const T *g, int GH, const T *w_ih, const std::int32_t *ids, int R,
                     int D, const ThreadSlice &s, const PackCopies<T> &copies) {
  if (ids) return;
  const Range rows = split(R, s.np, s.p, 1);
  if (rows.end <= rows.begin) return;  // no rows: nothing to pack
  copies.copy(w_ih, D, false, s.p)
      .run(dx + static_cast<idx>(rows.begin) * D, D, g + static_cast<idx>(rows.begin) * GH, GH,
           rows.end - rows.begin, false);
}

}  // namespace rnncore
