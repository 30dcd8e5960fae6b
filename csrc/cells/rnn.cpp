// Vanilla RNN, forward and backward side by side.
//
// Shape legend: T steps, B batch, D input size, H hidden size. Row-major, time-major.
//   x (T,B,D)   w_ih (H,D)   w_hh (H,H)   bias (H)   states (T+1,B,H), slot 0 = h0
//
// Forward: one GEMM for the input projection of all T*B rows, then per step one recurrent GEMM
// accumulated onto it and one fused pass (bias + activation) in place.
// Backward: per step one fused pass (dy + dh) * act'(h) and one GEMM for dh_{t-1}; after the
// loop dW_ih, dW_hh and dx are whole-sequence GEMMs and db a column sum.
//
// Threading: one OpenMP region around the whole time loop. Thread p owns hidden units
// [j0, j1) (a column slice, 16-aligned): it computes those columns of the input projection, of
// every step's recurrent product and of the pointwise update, so the only synchronisation is
// one barrier per step (the next step's GEMM reads every column of h). Where the batch allows
// (common/sequence.h row_groups) groups of threads own batch rows instead, and with one thread
// a group the loop has no barrier. Each element is always computed by a full-length dot product
// in the same order, so results do not depend on the thread count.
#include "cells/rnn.h"

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>

#include "common/activations.h"
#include "common/blas.h"
#include "common/input.h"
#include "common/pointwise.h"
#include "common/sequence.h"
#include "common/step_gemm.h"
#include "common/threading.h"

namespace rnncore {

namespace {

// h_t = act(pre + bias) in place over columns [j0, j1) of B rows. Branch-free loop bodies
// (the activation and the presence of dy are decided outside) so that GCC vectorises them.
// float32 tanh runs on the ISA path chosen at run time (common/pointwise.h); these loops are the
// portable path, float64's and the ReLU's.
template <typename T>
void activate(T *h, const T *bias, Activation act, int B, int H, int j0, int j1,
              const PointwiseKernels *pk) {
  if constexpr (std::is_same_v<T, float>)
    if (pk && act == Activation::Tanh) return pk->rnn_tanh(h, bias, B, H, j0, j1);
  for (int b = 0; b < B; ++b) {
    T *row = h + static_cast<idx>(b) * H;
    if (act == Activation::Tanh) {
#pragma omp simd
      for (int j = j0; j < j1; ++j) row[j] = tanh_f(row[j] + bias[j]);
    } else {
#pragma omp simd
      for (int j = j0; j < j1; ++j) row[j] = relu_f(row[j] + bias[j]);
    }
  }
}

// act'(h) from the activation's output: tanh' = 1 - h^2, relu' = [h > 0].
template <typename T>
inline T act_grad(Activation act, T h) {
  return act == Activation::Tanh ? T(1) - h * h : (h > T(0) ? T(1) : T(0));
}

// dpre = (g + dy) * act'(h) in place over columns [j0, j1): g holds the incoming dh.
template <typename T>
void activate_backward(T *g, const T *dy, const T *h, Activation act, int B, int H, int j0,
                       int j1) {
  with_dy(dy, [&](auto has_dy) {
    for (int b = 0; b < B; ++b) {
      const idx o = static_cast<idx>(b) * H;
      T *gr = g + o;
      const T *hr = h + o, *dyr = has_dy ? dy + o : nullptr;
      if (act == Activation::Tanh) {
#pragma omp simd
        for (int j = j0; j < j1; ++j)
          gr[j] = (has_dy ? gr[j] + dyr[j] : gr[j]) * act_grad(Activation::Tanh, hr[j]);
      } else {
#pragma omp simd
        for (int j = j0; j < j1; ++j)
          gr[j] = (has_dy ? gr[j] + dyr[j] : gr[j]) * act_grad(Activation::Relu, hr[j]);
      }
    }
  });
}

}  // namespace

template <typename T>
void RnnWorkspace<T>::prepare(const SeqInputs<T> &in, SeqSizes n) const {
  const GateBlocks g1{n.H, 1};  // G = 1: plain rows
  keep_inputs(seq, in, n);
  layout_input_weights<T>(seq.w_ih, in.w_ih, g1, n.D, in.ids != nullptr);
  std::memcpy(seq.w_hh, in.w_hh, static_cast<std::size_t>(n.H) * n.H * sizeof(T));
  sum_bias_blocked<T>(bias, in.b_ih, in.b_hh, g1);
}

template <typename T>
void RnnInferenceBuffers<T>::prepare(const SeqInputs<T> &in, SeqSizes n) const {
  sum_bias_blocked<T>(bias, in.b_ih, in.b_hh, GateBlocks{n.H, 1});
  if (h0) std::memset(h0, 0, static_cast<std::size_t>(n.BH()) * sizeof(T));
}

template <typename T>
void rnn_forward(const RnnForwardArgs<T> &a) {
  const SeqSizes n = a.n;
  if (empty_sequence(n)) return;
  const int nt = cell_threads(n, 1);
  const bool one_hot = a.ids != nullptr;
  const int groups = row_groups(n, 1, nt, packed_rows<T>(one_hot || input_side_packed(n.D, n.H)));
  const PackArena<T> arena(n.H, groups * n.H, nt);
  const PackArena<T> in_arena = input_arena<T>(n.D, groups * n.H, nt, one_hot);
  const PointwiseKernels *pk = std::is_same_v<T, float> ? pointwise_kernels() : nullptr;
#pragma omp parallel num_threads(nt)
  {
    const ThreadSlice s = grid_slice(n, groups);
    const int base = s.group * n.H;  // its row group's packed copies
    const StepGemm<T> rec = arena.slice(a.w_hh, n.H, true, s.j0, s.j1, s.p, base);  // h W_hh^T
    // Input projection of the rows that run, this thread's columns, a chunk ahead:
    // hs[:, j0:j1] = x W_ih^T
    InputProjection<T> in(a.hs, n.H, a.x, a.ids, a.w_ih, n.D, s.j0, s.j1, in_arena, s.p, n, nullptr,
                          {s.r0, s.r1}, base);
    for (int t = 0; t < n.steps(); ++t) {
      in.before(t);
      // This thread's rows [r.begin, r.end) of step t, and the same rows of step t-1.
      const Range r = s.rows(n, t);
      const idx row = n.at(t) + r.begin, prev = t == 0 ? r.begin : n.at(t - 1) + r.begin;
      const T *h_prev = (t == 0 ? a.h0 : a.hs) + prev * n.H;  // (M,H)
      T *h = a.hs + row * n.H;                                // (M,H)
      const int M = r.end - r.begin;
      // Each tile of the product (h += h_{t-1} W_hh^T), then its units' activation.
      fused_step(rec, h, n.H, h_prev, n.H, M, true, GateBlocks{n.H, 1}, kUnitBlock, s,
                 [&](int k, auto w) {
                   const int u0 = k * kUnitBlock;
                   activate<T>(h, a.bias, a.act, M, n.H, u0, u0 + int(w), pk);
                 });
      if (s.shared) {
#pragma omp barrier
      }
    }
  }
}

template <typename T>
void rnn_backward(const RnnBackwardArgs<T> &a) {
  const SeqSizes n = a.n;
  const RnnGrads<T> &g = a.out;
  const T *states = a.fwd.seq.h_states, *x = a.fwd.seq.x, *w_ih = a.fwd.seq.w_ih;
  const std::int32_t *ids = a.fwd.seq.ids;
  const idx BH = n.BH(), H = n.H;
  const int TB = n.TB();
  if (empty_sequence(n)) {
    empty_sequence_grads<T>({{g.dh0, a.dh_n}}, BH,
                            {{g.dw_ih, H * n.D}, {g.dw_hh, H * H}, {g.db, H}, {g.dx, TB * n.D}});
    return;
  }
  T *dpre = a.scratch.dpre;  // (T,B,H), or (N,H) with lengths
  const int nt = cell_threads(n, 1), N = n.N(), Ts = n.steps();
  const int groups = row_groups(n, 1, nt, packed_rows<T>(true));
  const PackArena<T> arena(n.H, groups * n.H, nt);
  const PackCopies<T> w_ih_copies = dx_copies<T>(n.H, n.D, nt, ids != nullptr);
  const WeightGradArena<T> wg(n.D + n.H, nt);
  // On row groups each group sums the weight gradients over its own rows (group_weight_grads),
  // group 0 into dW itself, the others into `partials`, added after the loop.
  const bool dense = ids == nullptr;
  const int width = (dense ? n.D : 0) + n.H;
  const bool own_rows = groups > 1 && wg.packed();
  const Block partials(own_rows ? sizeof(T) * (groups - 1) * H * width : 0);
#pragma omp parallel num_threads(nt)
  {
    // The time loop's slice (rows and units: grid_slice), and the whole-sequence products' slice
    // after it (units of every row): the same on one row group.
    const ThreadSlice s = grid_slice(n, groups), u = thread_slice(n.H);
    const int j0 = s.j0, j1 = s.j1;
    const StepGemm<T> rec =
        arena.slice(a.fwd.seq.w_hh, n.H, false, j0, j1, s.p, s.group * n.H);  // dpre W_hh
    const int ng = own_rows ? region_groups(groups) : 1;
    // (N,H), dW_hh over all rows by columns
    const T *h_prev = ng > 1 ? nullptr : prev_states(a.scratch.h_prev, states, n, u.j0, u.j1);
    // This thread's rows among rows [r0, r1) of step dst's dh, whose last step is the one dst
    // belongs to: dh_n.
    auto dh_n_rows = [&](T *dst, int r0, int r1) {
      r0 = std::max(r0, s.r0), r1 = std::min(r1, s.r1);
      if (r1 > r0) copy_or_zero_block(dst, a.dh_n, r0, r1, n.H, j0, j1);
    };
    // The bias gradient: each batch row's dpre summed over its steps (from the last) inside
    // the loop, while they are in cache, then those row sums in row order after it; one order
    // for every thread count and row grouping. Each thread sums its own rows and units.
    T *db_rows = a.scratch.db_rows;  // (B,H)
    if (g.db) zero_block(db_rows, H, s.r0, std::min(s.r1, n.B), j0, j1);
    // This thread's rows of step t's dpre: (dy + dh) * act'(h) in place, units [u0, u1).
    auto derivative = [&](int t, int u0, int u1) {
      const Range r = s.rows(n, t);
      const idx row = n.at(t) + r.begin;
      activate_backward<T>(dpre + row * H, a.dy ? a.dy + row * H : nullptr, states + BH + row * H,
                           a.act, r.end - r.begin, n.H, u0, u1);
      if (g.db)
        add_rows<T>(db_rows + r.begin * H + u0, H, dpre + row * H + u0, H, r.end - r.begin,
                    u1 - u0);
    };
    // Last step: dpre[T-1] = (dy[T-1] + dh_n) * act'(h_T).
    T *last = dpre + n.at(Ts - 1) * H;  // (rows(Ts-1),H)
    dh_n_rows(last, 0, n.rows(Ts - 1));
    derivative(Ts - 1, j0, j1);
    if (s.shared) {
#pragma omp barrier
    }
    for (int t = Ts - 1; t >= 0; --t) {
      // dh_{t-1} lands directly in dpre[t-1] (or dh0), then becomes dpre[t-1] in place; the
      // rows that end at step t-1 (or have length 0) start from dh_n.
      T *g_prev = t > 0 ? dpre + n.at(t - 1) * H : g.dh0;  // (rows(t-1),H)
      // The rows the product does not reach first, then each tile of the product followed by
      // its units' derivative (step t-1).
      dh_n_rows(g_prev, n.rows(t), t > 0 ? n.rows(t - 1) : n.B);
      const Range r = s.rows(n, t);
      fused_step(rec, g_prev + r.begin * H, n.H, dpre + (n.at(t) + r.begin) * H, n.H,
                 r.end - r.begin, false, GateBlocks{n.H, 1}, kUnitBlock, s, [&](int k, auto w) {
                   if (t > 0) derivative(t - 1, k * kUnitBlock, k * kUnitBlock + int(w));
                 });
      if (s.shared) {
#pragma omp barrier
      }
    }
    if (ng > 1) {  // this group's share of dW_ih (dense) and dW_hh, its threads' columns
      T *p_ih = s.group == 0 ? g.dw_ih : partials.as<T>() + (s.group - 1) * H * width;
      T *p_hh = s.group == 0 ? g.dw_hh : p_ih + (dense ? H * n.D : 0);
      group_weight_grads<T>(wg, s, n, j0, j1, n.H, dpre, x, dense ? p_ih : nullptr, dpre, states,
                            p_hh);
    }
    // Every row of dpre (and db_rows, and every group's share of dW) is read from here on.
    if (!s.shared || ng > 1) {
#pragma omp barrier
    }
    // Whole-sequence weight gradients, this thread's rows (= its hidden units):
    //   dW_ih[j0:j1] = dpre[:, j0:j1]^T x,  dW_hh[j0:j1] = dpre[:, j0:j1]^T h_{t-1}.
    if (u.j1 > u.j0) {
      if (g.db) col_sums<T>(g.db, db_rows, n.B, H, u.j0, u.j1);
      if (ng > 1) {
        const T *parts = partials.as<T>();
        if (dense) add_group_partials<T>(g.dw_ih, parts, H * width, ng - 1, u.j0, u.j1, n.D);
        add_group_partials<T>(g.dw_hh, parts + (dense ? H * n.D : 0), H * width, ng - 1, u.j0, u.j1,
                              n.H);
        if (!dense)
          input_weight_grad<T>(g.dw_ih, dpre, n.H, x, ids, N, n.D, n.H, u.j0, u.j1,
                               a.scratch.dw_onehot, wg, s.p);
      } else {
        weight_grads_ih_hh<T>(g.dw_ih, g.dw_hh, dpre, n.H, x, ids, h_prev, N, n.D, n.H, n.H, u.j0,
                              u.j1, a.scratch.dw_onehot, wg, s.p);
      }
    }
    input_grad_rows<T>(g.dx, dpre, n.H, w_ih, ids, N, n.D, u, w_ih_copies);
  }
}

#define RNNCORE_INSTANTIATE(T)                             \
  template struct RnnWorkspace<T>;                         \
  template struct RnnInferenceBuffers<T>;                  \
  template void rnn_forward<T>(const RnnForwardArgs<T> &); \
  template void rnn_backward<T>(const RnnBackwardArgs<T> &);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
