// The input side of a cell: x W_ih^T for all T*B rows, and its weight gradient.
//
// The input is either dense rows x (TB, D), or token ids (TB) standing for one-hot rows over D
// (a language model's characters). For one-hot input the projection is a gather and the weight
// gradient a scatter-add, and no dx exists:
//
//   dense    proj[i, c] = sum_d x[i, d] W[c, d]      dW[c, d] = sum_i g[i, c] x[i, d]
//   one-hot  proj[i, c] = W[c, ids[i]] = Wt[ids[i], c]          dW[c, ids[i]] += g[i, c]
//
// W (N, D) row-major holds N = G*H gate rows (gate-blocked for gated cells); for one-hot input
// the cells receive it transposed, Wt (D, N), so that a gather copies contiguous rows.
// Both helpers work on the column (gate row) range [c0, c1) of one thread.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <type_traits>

#include <omp.h>

#include "common/blas.h"
#include "common/gates.h"
#include "common/sequence.h"
#include "common/step_gemm.h"
#include "common/stream.h"

namespace rnncore {

// The packing of W_ih for the input projection (K = D, N = G*H): the packed micro-kernel while it
// fits a core's L2 (input_side_packed), OpenBLAS past that; one-hot input packs nothing.
template <typename T>
PackArena<T> input_arena(int D, int GH, int threads, bool one_hot) {
  return PackArena<T>(D, one_hot ? 0 : GH, threads, !one_hot && input_side_packed(D, GH));
}

// out[:, c0:c1] (rows of leading dimension ldo) = the input projection, thread p's gate
// columns. Dense input runs on the step product's kernel (common/step_gemm.h) with W's rows
// [c0, c1) in thread p's slice of `arena` (input_arena): packed, float32 takes the
// micro-kernel (no beta pass, no per-call packing of x); otherwise OpenBLAS.
//
// A cell asks for it step by step (before(t) ahead of step t): where every element is computed
// the same whatever rows a call covers (the packed kernel, and the gather of one-hot input), it
// projects a chunk of steps at a time, about 256 KB of this thread's columns, just before they
// run, so the step's product accumulates into rows still in L2 instead of rows written out to
// L3 a whole sequence earlier. OpenBLAS (float64, or W too big for L2) projects every row at
// step 0, as one call. Each thread reads only its own columns, so no barrier is needed. On the
// wavefront schedule (`wait`) it first waits until the x rows of the chunk are published, and
// projects by chunks on OpenBLAS too (else the layer would wait for the whole input). On a grid
// of row groups (common/sequence.h row_groups: packed kernel only) it projects only the thread's
// rows `mine` of each step, on its group's copy of W (columns from `base` in the arena).
template <typename T>
class InputProjection {
 public:
  InputProjection(T *out, int ldo, const T *x, const std::int32_t *ids, const T *w, int D, int c0,
                  int c1, const PackArena<T> &arena, int p, SeqSizes n,
                  const StepStream *wait = nullptr, Range mine = {0, INT32_MAX}, int base = 0)
      : out_(out),
        x_(x),
        w_(w),
        ids_(ids),
        ldo_(ldo),
        D_(D),
        c0_(c0),
        c1_(c1),
        n_(n),
        wait_(wait),
        mine_(mine),
        gemm_(arena.slice(w, D, true, c0, ids ? c0 : c1, p, base)) {  // one-hot: a gather
    // By chunks where no element changes with the rows a call covers, and on the wavefront
    // (wait), where OpenBLAS's chunks may round differently but the layers then overlap.
    const bool by_rows = ids != nullptr || gemm_.panel() > 0 || wait != nullptr;
    const idx row_bytes = std::max(1, c1 - c0) * static_cast<idx>(sizeof(T));
    chunk_rows_ = by_rows ? std::max<idx>(1, (idx(256) << 10) / row_bytes) : idx(n.N());
  }

  // Project the rows of step t (and of the steps after it in its chunk) unless done already.
  void before(int t) {
    if (t < next_ || c1_ <= c0_) return;
    int end = t + 1;
    while (end < n_.steps() && n_.at(end) + n_.rows(end) - n_.at(t) <= chunk_rows_) ++end;
    if (wait_) wait_->wait(end);  // the wavefront: x rows of steps < end published
    if (mine_.begin == 0 && mine_.end >= n_.B) {
      run(n_.row0(t), n_.row0(end - 1) + n_.rows(end - 1));
    } else {
      for (int s = t; s < end; ++s) {
        const int lo = std::min(mine_.begin, n_.rows(s)), hi = std::min(mine_.end, n_.rows(s));
        if (hi > lo) run(n_.row0(s) + lo, n_.row0(s) + hi);
      }
    }
    next_ = end;
  }

 private:
  void run(int r0, int r1) const {
    T *out = out_ + static_cast<idx>(r0) * ldo_;
    if (!ids_) {
      gemm_.run(out, ldo_, x_ + static_cast<idx>(r0) * D_, D_, r1 - r0, false);
      return;
    }
    const int N = ldo_;  // one-hot callers pass the full gate width as ldo: Wt is (D, ldo)
    for (int i = r0; i < r1; ++i)
      std::memcpy(out_ + static_cast<idx>(i) * ldo_ + c0_, w_ + static_cast<idx>(ids_[i]) * N + c0_,
                  static_cast<std::size_t>(c1_ - c0_) * sizeof(T));
  }

  T *out_;
  const T *x_, *w_;
  const std::int32_t *ids_;
  int ldo_, D_, c0_, c1_;
  SeqSizes n_;
  const StepStream *wait_;
  Range mine_;
  StepGemm<T> gemm_;
  idx chunk_rows_ = 0;
  int next_ = 0;  // the first step not projected yet
};

// A weight gradient's operand: dw (N, D) rows [c0, c1) = g[:, c0:c1]^T x, x (TB, D).
template <typename T>
struct GradPart {
  const T *x;
  int D;
  T *dw;
};

// Scratch for weight_grads: one slice a thread, for operands of up to `total_d` columns in all
// (two operands at most). Drawn from the current pool (common/workspace.h) like every other
// workspace; empty where the products go to OpenBLAS.
template <typename T>
class WeightGradArena {
 public:
  WeightGradArena(int total_d, int threads)
      : floats_(std::is_same_v<T, float> && has_weight_grad_kernel(gemm_path())
                    ? weight_grad_scratch_floats(total_d, 2)
                    : 0),
        block_(floats_ * static_cast<std::size_t>(threads) * sizeof(float)) {}
  float *slice(int p) const { return block_.as<float>() + floats_ * static_cast<std::size_t>(p); }
  bool packed() const { return floats_ > 0; }

 private:
  std::size_t floats_;
  Block block_;
};

// The row groups a region really has: grid_slice falls back to one group where OpenMP gave a
// thread count that `groups` does not divide.
inline int region_groups(int groups) {
  return groups > 1 && omp_get_num_threads() % groups == 0 ? groups : 1;
}

// A weight-gradient operand over a thread's own rows: dw[c0:c1, :] = G[rows, c0:c1]^T X[rows]
// (G's rows of leading dimension ldg, X's of D).
template <typename T>
struct RowOperand {
  int c0, c1, ldg, D;
  T *dw;
};

// The weight gradients over the rows a thread ran in the time loop, step by step (rows()),
// on row groups (common/sequence.h row_groups): each group sums its own rows for every gate
// column -- rows its threads wrote, still in their own caches, read in whole rows, and only
// their x and h packed -- and the groups' partial sums are added after a barrier
// (add_group_partials). The column split (weight_grads) made every thread read half of each
// row of G, half of them written by another core, and pack every row of x and h. float32 on a
// SIMD path only (common/packed_gemm.h RowWindow); inert otherwise.
template <typename T>
class RowGrads {
 public:
  RowGrads(const WeightGradArena<T> &, int, std::initializer_list<RowOperand<T>>) {}
  void rows(std::initializer_list<const T *>, std::initializer_list<const T *>, int) {}
  void finish() {}
};

template <>
class RowGrads<float> {
 public:
  RowGrads(const WeightGradArena<float> &arena, int p,
           std::initializer_list<RowOperand<float>> ops) {
    WindowOperand w[RowWindow::kMaxOperands];
    int n = 0;
    for (const RowOperand<float> &o : ops)
      if (n < RowWindow::kMaxOperands) w[n++] = {o.c0, o.c1, o.ldg, o.D, o.dw};
    win_.open(gemm_path(), w, n, arena.slice(p));
  }
  // `count` consecutive rows: operand o's gradient rows at g[o], its X rows at x[o].
  void rows(std::initializer_list<const float *> g, std::initializer_list<const float *> x,
            int count) {
    if (count > 0) win_.add(g.begin(), x.begin(), count);
  }
  void finish() { win_.finish(); }

 private:
  RowWindow win_;
};

// A row group's share of dW_ih (dense input: dw_ih != nullptr) and dW_hh over the rows of
// slice s, gate columns [c0, c1) (RowGrads): dW_ih from g_ih and x, dW_hh from g_hh and the
// previous states (h_states (T+1,B,H) as the forward kept them), both of leading dimension ldg.
template <typename T>
void group_weight_grads(const WeightGradArena<T> &arena, const ThreadSlice &s, SeqSizes n, int c0,
                        int c1, int ldg, const T *g_ih, const T *x, T *dw_ih, const T *g_hh,
                        const T *h_states, T *dw_hh) {
  using List = std::initializer_list<RowOperand<T>>;
  RowGrads<T> rg(arena, s.p,
                 dw_ih ? List{{c0, c1, ldg, n.D, dw_ih}, {c0, c1, ldg, n.H, dw_hh}}
                       : List{{c0, c1, ldg, n.H, dw_hh}});
  for (int t = n.steps() - 1; t >= 0; --t) {
    const Range r = s.rows(n, t);
    const idx row = n.at(t) + r.begin, prev = t == 0 ? r.begin : n.at(t - 1) + r.begin;
    const T *h_rows = h_states + (t == 0 ? 0 : n.BH()) + prev * n.H;  // h_{t-1} of the rows
    if (dw_ih)
      rg.rows({g_ih + row * ldg, g_hh + row * ldg}, {x + row * n.D, h_rows}, r.end - r.begin);
    else
      rg.rows({g_hh + row * ldg}, {h_rows}, r.end - r.begin);
  }
  rg.finish();
}

// dst[c0:c1, :] += each of `parts` partial sums (each laid out as dst, `stride` floats apart):
// the row groups' shares of a weight gradient, added in group order.
template <typename T>
void add_group_partials(T *dst, const T *parts, idx stride, int nparts, int c0, int c1, int D) {
  for (int g = 0; g < nparts; ++g) {
    const T *src = parts + stride * g;
#pragma omp simd
    for (idx i = static_cast<idx>(c0) * D; i < static_cast<idx>(c1) * D; ++i) dst[i] += src[i];
  }
}

// Rows [c0, c1) of each part's dw from g (TB, ldg), in one pass over g: float32 on a SIMD path
// reads g in place and packs x by chunks into thread p's slice of `arena` (common/packed_gemm.h
// weight_grad_packed: each element the same for any column split, so dW does not change with
// the thread count); otherwise one OpenBLAS call per part.
template <typename T>
void weight_grads(const T *g, int ldg, int TB, int c0, int c1,
                  std::initializer_list<GradPart<T>> parts, const WeightGradArena<T> &arena,
                  int p) {
  if (c1 <= c0) return;
  if constexpr (std::is_same_v<T, float>) {
    if (arena.packed() && parts.size() <= 2) {
      WeightGradOperand ops[2];
      int n = 0;
      for (const GradPart<T> &q : parts) ops[n++] = {q.x, q.D, q.dw};
      weight_grad_packed(gemm_path(), g, ldg, TB, c0, c1, ops, n, arena.slice(p));
      return;
    }
  }
  (void)arena;
  (void)p;
  for (const GradPart<T> &q : parts)
    gemm_rows<T>(c0, c1, true, false, q.D, TB, g, ldg, q.x, q.D, T(0), q.dw, q.D);
}

// Rows [c0, c1) of dW (N, D) (overwritten) from g (TB, ldg). One-hot input accumulates in
// `scratch` (D, N: columns [c0, c1) are this thread's) and writes the transpose out.
template <typename T>
void input_weight_grad(T *dw, const T *g, int ldg, const T *x, const std::int32_t *ids, int TB,
                       int D, int N, int c0, int c1, T *scratch, const WeightGradArena<T> &arena,
                       int p) {
  if (c1 <= c0) return;
  if (!ids) {
    weight_grads<T>(g, ldg, TB, c0, c1, {{x, D, dw}}, arena, p);
    return;
  }
  for (int d = 0; d < D; ++d)
    std::fill(scratch + static_cast<std::ptrdiff_t>(d) * N + c0,
              scratch + static_cast<std::ptrdiff_t>(d) * N + c1, T(0));
  for (int i = 0; i < TB; ++i) {
    T *row = scratch + static_cast<std::ptrdiff_t>(ids[i]) * N;
    const T *gi = g + static_cast<std::ptrdiff_t>(i) * ldg;
#pragma omp simd
    for (int c = c0; c < c1; ++c) row[c] += gi[c];
  }
  for (int c = c0; c < c1; ++c)
    for (int d = 0; d < D; ++d)
      dw[static_cast<std::ptrdiff_t>(c) * D + d] = scratch[static_cast<std::ptrdiff_t>(d) * N + c];
}

// Rows [c0, c1) of dW_ih (N, D) and dW_hh (N, H) (overwritten) from g (TB, ldg), the input x
// and the previous states h_prev (TB, H): one pass over g for both where the input is dense.
// One-hot input accumulates dW_ih in `scratch` (D, N: columns [c0, c1) are this thread's) and
// writes the transpose out.
template <typename T>
void weight_grads_ih_hh(T *dw_ih, T *dw_hh, const T *g, int ldg, const T *x,
                        const std::int32_t *ids, const T *h_prev, int TB, int D, int H, int N,
                        int c0, int c1, T *scratch, const WeightGradArena<T> &arena, int p) {
  if (c1 <= c0) return;
  if (!ids) {
    weight_grads<T>(g, ldg, TB, c0, c1, {{x, D, dw_ih}, {h_prev, H, dw_hh}}, arena, p);
    return;
  }
  weight_grads<T>(g, ldg, TB, c0, c1, {{h_prev, H, dw_hh}}, arena, p);
  input_weight_grad<T>(dw_ih, g, ldg, x, ids, TB, D, N, c0, c1, scratch, arena, p);
}

// W_ih (N = G*H, D) in PyTorch's row order -> the cell's layout: gate-blocked rows (the identity
// for G = 1), transposed to Wt (D, N) for one-hot input. Paid once per call.
template <typename T>
void layout_input_weights(T *dst, const T *w, GateBlocks gb, int D, bool one_hot) {
  if (!one_hot) {
    block_gate_rows<T>(dst, w, gb, D);
    return;
  }
  const std::ptrdiff_t N = static_cast<std::ptrdiff_t>(gb.G) * gb.H;
  for (int g = 0; g < gb.G; ++g)
    for (int j = 0; j < gb.H; ++j) {
      const std::ptrdiff_t r = gb.row(g, j);
      const T *src = w + (static_cast<std::ptrdiff_t>(g) * gb.H + j) * D;
      for (int d = 0; d < D; ++d) dst[d * N + r] = src[d];
    }
}

}  // namespace rnncore
