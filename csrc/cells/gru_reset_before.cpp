// GRU with the reset applied before the recurrent product (Cho et al., char-rnn;
// reset_after=False), forward and backward side by side:  n = tanh(W_in x + b_in + W_hn (r ⊙ h) +
// b_hn).
//
// Shape legend: T steps, B batch, D input size, H hidden size, G = 3 gates (r, z, n).
//   x (T,B,D)   w_ih (3H,D) blocked G = 3   w_hh (3H,H): r, z rows blocked G = 2, then n plain
//   b_ih (3H) blocked   b_hh (3H) in w_hh's order   h_states (T+1,B,H)
//   gates (T,B,3H): activated r, z, n (blocked G = 3)   aux (T,B,H): r ⊙ h_{t-1}
//   gh (B,3H): one step's h W_rz^T in [0, 2H) (blocked G = 2), (r ⊙ h) W_hn^T in [2H, 3H)
//
// Threading: one OpenMP region around the time loop; thread p owns hidden units [j0, j1)
// (16-aligned). W_hn multiplies r ⊙ h of *every* unit, so each step has two GEMMs and two
// barriers: r and z first, then n. Where the batch allows, groups of threads own batch rows
// instead (common/sequence.h row_groups); with one thread a group neither barrier is needed.
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <type_traits>

#include "cells/gru.h"
#include "cells/gru_detail.h"
#include "common/activations.h"
#include "common/blas.h"
#include "common/gates.h"
#include "common/input.h"
#include "common/pointwise.h"
#include "common/sequence.h"
#include "common/step_gemm.h"
#include "common/threading.h"

namespace rnncore {

namespace {

using gru::BlockCols;
using gru::G;

// Where block k's r, z, n live in a row of gh / dgh: r, z blocked G = 2, n plain from 2H.
inline BlockCols recurrent_cols(int H, int k) {
  const GateBlocks g2{H, 2};
  const idx b = g2.begin(k), w = g2.width(k);
  return {b, b + w, static_cast<idx>(2) * H + static_cast<idx>(k) * kUnitBlock};
}

// Forward, first half of a step for unit block k, rows [rows.begin, rows.end) of step t: r and
// z, and r ⊙ h_{t-1} (W_hn's input). hp: h_{t-1} of the first of those rows.
template <typename T, typename W>
void forward_rz_block(const GruForwardArgs<T> &a, int t, Range rows, const T *hp, int k, W w,
                      const PointwiseKernels *pk) {
  const SeqSizes n = a.n;
  const idx H3 = static_cast<idx>(G) * n.H, r0 = (n.at(t) + rows.begin) * n.H;
  const int u0 = k * kUnitBlock, M = rows.end - rows.begin;
  const BlockCols ci = gru::blocked_cols(GateBlocks{n.H, G}, k), ch = recurrent_cols(n.H, k);
  T *gt = a.gates + r0 * G, *at = a.aux + r0;
  const T *gh = a.gh + rows.begin * H3;
  if constexpr (std::is_same_v<T, float>)
    if (pk) return pk->gru_rb_forward_rz(gt, gh, hp, at, a.b_ih, a.b_hh, ci.r, ch.r, u0, w, M, n.H);
  const T *bir = a.b_ih + ci.r, *biz = a.b_ih + ci.z, *bhr = a.b_hh + ch.r, *bhz = a.b_hh + ch.z;
  for (int b = 0; b < M; ++b) {
    T *ir = gt + b * H3 + ci.r, *iz = gt + b * H3 + ci.z;
    const T *hr = gh + b * H3 + ch.r, *hz = gh + b * H3 + ch.z;
    const T *hpb = hp + b * static_cast<idx>(n.H) + u0;
    T *ab = at + b * static_cast<idx>(n.H) + u0;
#pragma omp simd
    for (int u = 0; u < w; ++u) {
      const T rr = sigmoid_f(ir[u] + bir[u] + hr[u] + bhr[u]);
      const T zz = sigmoid_f(iz[u] + biz[u] + hz[u] + bhz[u]);
      ir[u] = rr, iz[u] = zz;
      ab[u] = rr * hpb[u];  // r ⊙ h_{t-1}: the input of W_hn
    }
  }
}

// Forward, second half for unit block k, the same rows: n from (r ⊙ h) W_hn^T, then h_t.
template <typename T, typename W>
void forward_n_block(const GruForwardArgs<T> &a, int t, Range rows, const T *hp, int k, W w,
                     const PointwiseKernels *pk) {
  const SeqSizes n = a.n;
  const idx H3 = static_cast<idx>(G) * n.H, r0 = (n.at(t) + rows.begin) * n.H;
  const int u0 = k * kUnitBlock, M = rows.end - rows.begin;
  const BlockCols ci = gru::blocked_cols(GateBlocks{n.H, G}, k), ch = recurrent_cols(n.H, k);
  T *gt = a.gates + r0 * G, *ht = a.hs + r0;
  const T *gh = a.gh + rows.begin * H3;
  if constexpr (std::is_same_v<T, float>)
    if (pk) return pk->gru_rb_forward_n(gt, gh, hp, ht, a.b_ih, a.b_hh, ci.r, ch.n, u0, w, M, n.H);
  const T *bin = a.b_ih + ci.n, *bhn = a.b_hh + ch.n;
  for (int b = 0; b < M; ++b) {
    T *in = gt + b * H3 + ci.n, *hb = ht + b * static_cast<idx>(n.H) + u0;
    const T *zz = gt + b * H3 + ci.z, *hn = gh + b * H3 + ch.n;
    const T *hpb = hp + b * static_cast<idx>(n.H) + u0;
#pragma omp simd
    for (int u = 0; u < w; ++u) {
      const T nn = tanh_f(in[u] + bin[u] + hn[u] + bhn[u]);
      in[u] = nn;
      hb[u] = nn + zz[u] * (hpb[u] - nn);
    }
  }
}

// Backward, first half for unit block k, rows [rows.begin, rows.end) of step t: what needs only
// this step's dh (+ dy): the n and z gradients; dh becomes the direct path's part of dh_{t-1}.
template <typename T, typename W, typename HasDy>
void backward_nz_block(const GruBackwardArgs<T> &a, int t, Range rows, int k, W w, HasDy has_dy) {
  const SeqSizes n = a.n;
  const idx BH = n.BH(), H3 = static_cast<idx>(G) * n.H, r0 = (n.at(t) + rows.begin) * n.H;
  const int u0 = k * kUnitBlock;
  const BlockCols ci = gru::blocked_cols(GateBlocks{n.H, G}, k), ch = recurrent_cols(n.H, k);
  const T *gt = a.fwd.gates + r0 * G;
  const T *hp =
      a.fwd.seq.h_states + (t == 0 ? 0 : BH + n.at(t - 1) * n.H) + rows.begin * n.H;  // h_{t-1}
  const T *dyt = has_dy ? a.dy + r0 : nullptr;
  T *dit = a.scratch.dgi + r0 * G, *dht = a.scratch.dgh + r0 * G;
  T *dh = a.scratch.dh + rows.begin * n.H;
  for (int b = 0; b < rows.end - rows.begin; ++b) {
    const idx o = b * static_cast<idx>(n.H) + u0;
    const T *zz = gt + b * H3 + ci.z, *nn = gt + b * H3 + ci.n;
    const T *hpb = hp + o, *dyb = has_dy ? dyt + o : nullptr;
    T *dhb = dh + o, *diz = dit + b * H3 + ci.z, *din = dit + b * H3 + ci.n;
    T *dhz = dht + b * H3 + ch.z, *dhn = dht + b * H3 + ch.n;
#pragma omp simd
    for (int u = 0; u < w; ++u) {
      const T g = has_dy ? dhb[u] + dyb[u] : dhb[u];
      const T dn = g * (T(1) - zz[u]) * (T(1) - nn[u] * nn[u]);
      const T dz = g * (hpb[u] - nn[u]) * zz[u] * (T(1) - zz[u]);
      dhb[u] = g * zz[u];
      din[u] = dn, diz[u] = dz;
      dhz[u] = dz, dhn[u] = dn;
    }
  }
}

// Backward, second half for unit block k, the same rows: from d(r ⊙ h) = d(n_pre) W_hn (in
// drh), r's gradient and the path through r ⊙ h into dh.
template <typename T, typename W>
void backward_r_block(const GruBackwardArgs<T> &a, int t, Range rows, int k, W w) {
  const SeqSizes n = a.n;
  const idx BH = n.BH(), H3 = static_cast<idx>(G) * n.H, r0 = (n.at(t) + rows.begin) * n.H;
  const int u0 = k * kUnitBlock;
  const BlockCols ci = gru::blocked_cols(GateBlocks{n.H, G}, k), ch = recurrent_cols(n.H, k);
  const T *gt = a.fwd.gates + r0 * G;
  const T *hp =
      a.fwd.seq.h_states + (t == 0 ? 0 : BH + n.at(t - 1) * n.H) + rows.begin * n.H;  // h_{t-1}
  T *dit = a.scratch.dgi + r0 * G, *dht = a.scratch.dgh + r0 * G;
  T *dh = a.scratch.dh + rows.begin * n.H;
  const T *drh = a.scratch.drh + rows.begin * n.H;
  for (int b = 0; b < rows.end - rows.begin; ++b) {
    const idx o = b * static_cast<idx>(n.H) + u0;
    const T *rr = gt + b * H3 + ci.r, *hpb = hp + o, *drb = drh + o;
    T *dhb = dh + o, *dir = dit + b * H3 + ci.r, *dhr = dht + b * H3 + ch.r;
#pragma omp simd
    for (int u = 0; u < w; ++u) {
      const T dr = drb[u] * hpb[u] * rr[u] * (T(1) - rr[u]);
      dhb[u] += drb[u] * rr[u];
      dir[u] = dr, dhr[u] = dr;
    }
  }
}

}  // namespace

template <typename T>
void gru_reset_before_forward(const GruForwardArgs<T> &a) {
  const SeqSizes n = a.n;
  if (empty_sequence(n)) return;
  const idx H2 = 2 * static_cast<idx>(n.H), H3 = static_cast<idx>(G) * n.H;
  const GateBlocks g3{n.H, G};
  const T *w_hn = a.w_hh + H2 * n.H;  // (H,H) plain rows
  const int nt = cell_threads(n, G);
  const bool one_hot = a.ids != nullptr;
  const int groups =
      row_groups(n, G, nt, packed_rows<T>(one_hot || input_side_packed(n.D, G * n.H)));
  // h W_rz^T (2H columns) and (r ⊙ h) W_hn^T (H columns), a copy for each row group.
  const PackArena<T> arena(n.H, groups * 2 * n.H, nt), arena_n(n.H, groups * n.H, nt);
  const PackArena<T> in_arena = input_arena<T>(n.D, groups * G * n.H, nt, one_hot);  // x W_ih^T
  const PointwiseKernels *pk = std::is_same_v<T, float> ? pointwise_kernels() : nullptr;
#pragma omp parallel num_threads(nt)
  {
    const ThreadSlice s = grid_slice(n, groups);
    const int gr = s.group;
    const StepGemm<T> rec = arena.slice(a.w_hh, n.H, true, 2 * s.j0, 2 * s.j1, s.p, gr * 2 * n.H);
    const StepGemm<T> rec_n = arena_n.slice(w_hn, n.H, true, s.j0, s.j1, s.p, gr * n.H);
    // Input projection, this thread's gate columns, a chunk ahead.
    InputProjection<T> in(a.gates, G * n.H, a.x, a.ids, a.w_ih, n.D, G * s.j0, G * s.j1, in_arena,
                          s.p, n, nullptr, {s.r0, s.r1}, gr * G * n.H);
    for (int t = 0; t < n.steps(); ++t) {
      in.before(t);
      // This thread's rows of step t, and h_{t-1} of the same rows.
      const Range r = s.rows(n, t);
      const int M = r.end - r.begin;
      const T *hp = (t == 0 ? a.h0 : a.hs + n.at(t - 1) * n.H) + r.begin * n.H;  // (M,H)
      T *gh = a.gh + r.begin * H3;
      rec.run(gh, G * n.H, hp, n.H, M, false);
      for_unit_blocks(g3, s.k0, s.k1,
                      [&](int k, auto w) { forward_rz_block(a, t, r, hp, k, w, pk); });
      if (s.shared) {
#pragma omp barrier
      }
      // n's recurrent term needs r ⊙ h of every unit.
      rec_n.run(gh + H2, G * n.H, a.aux + (n.at(t) + r.begin) * n.H, n.H, M, false);
      for_unit_blocks(g3, s.k0, s.k1,
                      [&](int k, auto w) { forward_n_block(a, t, r, hp, k, w, pk); });
      if (s.shared) {
#pragma omp barrier
      }
    }
  }
}

template <typename T>
void gru_reset_before_backward(const GruBackwardArgs<T> &a) {
  const SeqSizes n = a.n;
  const GruGrads<T> &g = a.out;
  const SeqBuffers<T> &f = a.fwd.seq;
  const idx BH = n.BH(), H3 = static_cast<idx>(G) * n.H, H2 = 2 * static_cast<idx>(n.H);
  const int TB = n.TB(), N = n.N();
  if (empty_sequence(n)) {
    empty_sequence_grads<T>({{g.dh0, a.dh_n}}, BH,
                            {{g.dw_ih, H3 * n.D},
                             {g.dw_hh, H3 * n.H},
                             {g.db_ih, H3},
                             {g.db_hh, H3},
                             {g.dx, static_cast<idx>(TB) * n.D}});
    return;
  }
  const GateBlocks g3{n.H, G}, g2{n.H, 2};
  const int nt = cell_threads(n, G);
  const int groups = row_groups(n, G, nt, packed_rows<T>(true));
  // d(gh_rz) W_rz (K = 2H) for this thread's units, and d(n_pre) W_hn; a copy per row group.
  const PackArena<T> arena(2 * n.H, groups * n.H, nt), arena_n(n.H, groups * n.H, nt);
  const PackCopies<T> w_ih_copies = dx_copies<T>(G * n.H, n.D, nt, f.ids != nullptr);
  const WeightGradArena<T> wg(std::max(n.D, n.H), nt);
  T *dh = a.scratch.dh, *dgh = a.scratch.dgh;
#pragma omp parallel num_threads(nt)
  {
    // The time loop's slice (rows and units: grid_slice), and the whole-sequence products' slice
    // after it (units of every row): the same on one row group.
    const ThreadSlice s = grid_slice(n, groups), u = thread_slice(n.H);
    const int j0 = s.j0, j1 = s.j1, b1 = std::min(s.r1, n.B), base = s.group * n.H;
    const StepGemm<T> rec = arena.slice(f.w_hh, n.H, false, j0, j1, s.p, base);
    const StepGemm<T> rec_n = arena_n.slice(f.w_hh + H2 * n.H, n.H, false, j0, j1, s.p, base);
    const T *h_prev = prev_states(a.scratch.h_prev, f.h_states, n, u.j0, u.j1);  // (N,H), dW_hh
    // A row not active yet (lengths) keeps dh_n until its last step.
    copy_or_zero_block(dh, a.dh_n, s.r0, b1, n.H, j0, j1);
    // The bias gradients: each batch row's dgi and dgh summed over its steps (from the last)
    // inside the loop, while they are in cache, then those row sums in row order after it; one
    // order for every thread count and row grouping. Each thread sums its own rows and units:
    // in dgi its blocked r, z, n columns, in dgh its blocked r, z columns and its plain n ones.
    T *dbi_rows = a.scratch.dbi_rows, *dbh_rows = a.scratch.dbh_rows;  // (B,3H) each
    zero_block(dbi_rows, H3, s.r0, b1, G * j0, G * j1);
    zero_block(dbh_rows, H3, s.r0, b1, 2 * j0, 2 * j1);
    zero_block(dbh_rows, H3, s.r0, b1, H2 + j0, H2 + j1);
    for (int t = n.steps() - 1; t >= 0; --t) {
      const Range r = s.rows(n, t);
      T *dht = dgh + (n.at(t) + r.begin) * H3;
      const int M = r.end - r.begin;
      with_dy(a.dy, [&](auto has_dy) {
        for_unit_blocks(g3, s.k0, s.k1,
                        [&](int k, auto w) { backward_nz_block(a, t, r, k, w, has_dy); });
      });
      if (s.shared) {
#pragma omp barrier
      }
      // d(r ⊙ h) = d(n_pre) W_hn needs every unit's d(n_pre).
      rec_n.run(a.scratch.drh + r.begin * n.H, n.H, dht + H2, G * n.H, M, false);
      for_unit_blocks(g3, s.k0, s.k1, [&](int k, auto w) {
        backward_r_block(a, t, r, k, w);
        const idx row = n.at(t) + r.begin, wk = g3.width(k), ci = g3.begin(k), cr = g2.begin(k);
        const idx cn = H2 + static_cast<idx>(k) * kUnitBlock;
        const int M = r.end - r.begin;
        add_rows<T>(dbi_rows + r.begin * H3 + ci, H3, a.scratch.dgi + row * H3 + ci, H3, M, 3 * wk);
        add_rows<T>(dbh_rows + r.begin * H3 + cr, H3, dgh + row * H3 + cr, H3, M, 2 * wk);
        add_rows<T>(dbh_rows + r.begin * H3 + cn, H3, dgh + row * H3 + cn, H3, M, wk);
      });
      if (s.shared) {
#pragma omp barrier
      }
      // dh_{t-1}[rows, j0:j1] += d(recurrent pre-activations) W_hh[:, j0:j1]: every column.
      rec.run(dh + r.begin * n.H, n.H, dht, G * n.H, M, true);
    }
    copy_or_zero_block<T>(g.dh0, dh, s.r0, b1, n.H, j0, j1);
    // Every row of dgi and dgh (and of the row sums) is read from here on.
    if (!s.shared) {
#pragma omp barrier
    }
    // Whole-sequence weight gradients of this thread's units: the input side and the r, z rows
    // blocked into the scratch, then put back in PyTorch's order; the n rows straight out.
    if (u.j1 > u.j0) {
      const int k0 = u.j0, k1 = u.j1;
      T *s_ih = a.scratch.dw, *s_hh = s_ih + H3 * n.D, *s_bi = s_hh + H3 * n.H, *s_bh = s_bi + H3;
      gru::input_side_grads<T>(g.dw_ih, g.db_ih, s_ih, s_bi, a.scratch.dgi, dbi_rows, f.x, f.ids,
                               a.scratch.dw_onehot, n, k0, k1, wg, s.p);
      weight_grads<T>(dgh, G * n.H, N, 2 * k0, 2 * k1, {{h_prev, n.H, s_hh}}, wg, s.p);
      col_sums<T>(s_bh, dbh_rows, n.B, H3, 2 * k0, 2 * k1);
      unblock_gate_rows<T>(g.dw_hh, s_hh, g2, n.H, k0, k1);  // rows r, z
      unblock_gate_rows<T>(g.db_hh, s_bh, g2, 1, k0, k1);
      weight_grads<T>(dgh + H2, G * n.H, N, k0, k1, {{a.fwd.aux, n.H, g.dw_hh + H2 * n.H}}, wg,
                      s.p);  // rows n, from r ⊙ h
      col_sums<T>(g.db_hh + H2, dbh_rows + H2, n.B, H3, k0, k1);
    }
    // dx = dgi W_ih (both blocked: the sum over gates does not care about their order).
    input_grad_rows<T>(g.dx, a.scratch.dgi, G * n.H, f.w_ih, f.ids, N, n.D, u, w_ih_copies);
  }
}

template void gru_reset_before_forward<float>(const GruForwardArgs<float> &);
template void gru_reset_before_forward<double>(const GruForwardArgs<double> &);
template void gru_reset_before_backward<float>(const GruBackwardArgs<float> &);
template void gru_reset_before_backward<double>(const GruBackwardArgs<double> &);

}  // namespace rnncore
