// GRU with the reset applied after the recurrent product (PyTorch's nn.GRU), forward and
// backward side by side:  n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)).
//
// Shape legend: T steps, B batch, D input size, H hidden size, G = 3 gates (r, z, n).
//   x (T,B,D)   w_ih, w_hh (3H,·) blocked G = 3   b_ih, b_hh (3H) blocked   h_states (T+1,B,H)
//   gates (T,B,3H): activated r, z, n   aux (T,B,H): W_hn h + b_hn   gh (B,3H) one step's h W_hh^T
// Input-side and recurrent-side gates share one blocked layout, so a unit block's r, z, n sit
// at the same columns of gi and gh.
//
// Threading: one OpenMP region around the time loop; thread p owns hidden units [j0, j1)
// (16-aligned) and the gate columns of those units: one GEMM and one barrier per step. Where the
// batch allows, groups of threads own batch rows instead (common/sequence.h row_groups); with one
// thread a group the loop has no barrier.
//
// float32 runs the pointwise passes on the ISA path chosen at run time (common/pointwise.h);
// forward_block and backward_block are the portable path and float64's.
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

// One step's pointwise update of unit block k (width w), rows [rows.begin, rows.end) of step t:
// activates the gates in place, keeps W_hn h + b_hn in aux and writes h_t. hp: h_{t-1} of the
// first of those rows.
template <typename T, typename W>
void forward_block(const GruForwardArgs<T> &a, int t, Range rows, const T *hp, int k, W w,
                   const PointwiseKernels *pk) {
  const SeqSizes n = a.n;
  const idx H3 = static_cast<idx>(G) * n.H, r0 = (n.at(t) + rows.begin) * n.H;
  const int u0 = k * kUnitBlock, M = rows.end - rows.begin;
  const BlockCols c = gru::blocked_cols(GateBlocks{n.H, G}, k);
  T *gt = a.gates + r0 * G, *at = a.aux + r0, *ht = a.hs + r0;
  const T *gh = a.gh + rows.begin * H3;
  const T *bir = a.b_ih + c.r, *biz = a.b_ih + c.z, *bin = a.b_ih + c.n;
  if constexpr (std::is_same_v<T, float>)
    if (pk) return pk->gru_forward(gt, gh, hp, at, ht, a.b_ih, a.b_hh, c.r, u0, w, M, n.H);
  const T *bhr = a.b_hh + c.r, *bhz = a.b_hh + c.z, *bhn = a.b_hh + c.n;
  for (int b = 0; b < M; ++b) {
    T *gi = gt + b * H3;
    const T *gr = gh + b * H3, *hpb = hp + b * static_cast<idx>(n.H) + u0;
    T *ab = at + b * static_cast<idx>(n.H) + u0, *hb = ht + b * static_cast<idx>(n.H) + u0;
    T *ir = gi + c.r, *iz = gi + c.z, *in = gi + c.n;
    const T *hr = gr + c.r, *hz = gr + c.z, *hn = gr + c.n;
#pragma omp simd
    for (int u = 0; u < w; ++u) {
      const T rr = sigmoid_f(ir[u] + bir[u] + hr[u] + bhr[u]);
      const T zz = sigmoid_f(iz[u] + biz[u] + hz[u] + bhz[u]);
      const T hnu = hn[u] + bhn[u];
      const T nn = tanh_f(in[u] + bin[u] + rr * hnu);
      ir[u] = rr, iz[u] = zz, in[u] = nn;
      ab[u] = hnu;
      hb[u] = nn + zz * (hpb[u] - nn);
    }
  }
}

// Backward of one step for unit block k, rows [rows.begin, rows.end) of step t: from dh (+ dy)
// to the pre-activation gradients of both sides; dh becomes the direct path's part of dh_{t-1}
// (the rest comes from W_hh).
template <typename T, typename W, typename HasDy>
void backward_block(const GruBackwardArgs<T> &a, int t, Range rows, int k, W w, HasDy has_dy) {
  const SeqSizes n = a.n;
  const idx BH = n.BH(), H3 = static_cast<idx>(G) * n.H, r0 = (n.at(t) + rows.begin) * n.H;
  const int u0 = k * kUnitBlock, M = rows.end - rows.begin;
  const BlockCols c = gru::blocked_cols(GateBlocks{n.H, G}, k);
  const T *gt = a.fwd.gates + r0 * G, *at = a.fwd.aux + r0;
  const T *hp =
      a.fwd.seq.h_states + (t == 0 ? 0 : BH + n.at(t - 1) * n.H) + rows.begin * n.H;  // h_{t-1}
  const T *dyt = has_dy ? a.dy + r0 : nullptr;
  T *dit = a.scratch.dgi + r0 * G, *dht = a.scratch.dgh + r0 * G;
  T *dh = a.scratch.dh + rows.begin * n.H;
  for (int b = 0; b < M; ++b) {
    const idx o = b * static_cast<idx>(n.H) + u0;
    const T *rr = gt + b * H3 + c.r, *zz = gt + b * H3 + c.z, *nn = gt + b * H3 + c.n;
    const T *hpb = hp + o, *ab = at + o, *dyb = has_dy ? dyt + o : nullptr;
    T *dhb = dh + o;
    T *dir = dit + b * H3 + c.r, *diz = dit + b * H3 + c.z, *din = dit + b * H3 + c.n;
    T *dhr = dht + b * H3 + c.r, *dhz = dht + b * H3 + c.z, *dhn = dht + b * H3 + c.n;
#pragma omp simd
    for (int u = 0; u < w; ++u) {
      const T g = has_dy ? dhb[u] + dyb[u] : dhb[u];
      const T dn = g * (T(1) - zz[u]) * (T(1) - nn[u] * nn[u]);  // d(n pre-activation)
      const T dz = g * (hpb[u] - nn[u]) * zz[u] * (T(1) - zz[u]);
      const T dr = dn * ab[u] * rr[u] * (T(1) - rr[u]);  // ab = W_hn h + b_hn
      dhb[u] = g * zz[u];                                // the direct path h_{t-1} -> h_t
      din[u] = dn, diz[u] = dz, dir[u] = dr;
      dhr[u] = dr, dhz[u] = dz, dhn[u] = dn * rr[u];
    }
  }
}

// The same for unit blocks [k0, k1) on a SIMD path (float32): row by row, each row's gates front
// to back (common/pointwise.h). False where there is none (the caller runs backward_block).
template <typename T>
bool backward_rows(const GruBackwardArgs<T> &a, int t, Range rows, int k0, int k1,
                   const PointwiseKernels *pk) {
  if constexpr (std::is_same_v<T, float>) {
    if (!pk) return false;
    const SeqSizes n = a.n;
    const idx BH = n.BH(), r0 = (n.at(t) + rows.begin) * n.H;
    const T *hp = a.fwd.seq.h_states + (t == 0 ? 0 : BH + n.at(t - 1) * n.H) + rows.begin * n.H;
    pk->gru_backward(a.scratch.dgi + r0 * G, a.scratch.dgh + r0 * G,
                     a.scratch.dh + rows.begin * n.H, a.dy ? a.dy + r0 : nullptr,
                     a.fwd.gates + r0 * G, hp, a.fwd.aux + r0, k0, k1, rows.end - rows.begin, n.H);
    return true;
  }
  return false;
}

}  // namespace

template <typename T>
void gru_reset_after_forward(const GruForwardArgs<T> &a) {
  const SeqSizes n = a.n;
  if (empty_sequence(n)) return;
  const GateBlocks g3{n.H, G};
  const int nt = cell_threads(n, G);
  const bool one_hot = a.ids != nullptr;
  const int groups =
      row_groups(n, G, nt, packed_rows<T>(one_hot || input_side_packed(n.D, G * n.H)));
  const PackArena<T> arena(n.H, groups * G * n.H, nt);  // h W_hh^T for all three gates
  const PackArena<T> in_arena = input_arena<T>(n.D, groups * G * n.H, nt, one_hot);  // x W_ih^T
  const PointwiseKernels *pk = std::is_same_v<T, float> ? pointwise_kernels() : nullptr;
#pragma omp parallel num_threads(nt)
  {
    const ThreadSlice s = grid_slice(n, groups);
    const int base = s.group * G * n.H;  // its row group's packed copies
    const StepGemm<T> rec = arena.slice(a.w_hh, n.H, true, G * s.j0, G * s.j1, s.p, base);
    // Input projection, this thread's gate columns, a chunk ahead.
    InputProjection<T> in(a.gates, G * n.H, a.x, a.ids, a.w_ih, n.D, G * s.j0, G * s.j1, in_arena,
                          s.p, n, nullptr, {s.r0, s.r1}, base);
    for (int t = 0; t < n.steps(); ++t) {
      in.before(t);
      // This thread's rows of step t, and h_{t-1} of the same rows.
      const Range r = s.rows(n, t);
      const T *hp = (t == 0 ? a.h0 : a.hs + n.at(t - 1) * n.H) + r.begin * n.H;  // (M,H)
      // Each tile of the product (gh = h_{t-1} W_hh^T, its rows of gh), then its units' update.
      fused_step(rec, a.gh + r.begin * G * n.H, G * n.H, hp, n.H, r.end - r.begin, false, g3,
                 G * kUnitBlock, s, [&](int k, auto w) { forward_block(a, t, r, hp, k, w, pk); });
      if (s.shared) {
#pragma omp barrier
      }
    }
  }
}

template <typename T>
void gru_reset_after_backward(const GruBackwardArgs<T> &a) {
  const SeqSizes n = a.n;
  const GruGrads<T> &g = a.out;
  const SeqBuffers<T> &f = a.fwd.seq;
  const idx BH = n.BH(), H3 = static_cast<idx>(G) * n.H;
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
  const GateBlocks g3{n.H, G};
  const int nt = cell_threads(n, G);
  const int groups = row_groups(n, G, nt, packed_rows<T>(true));
  const PackArena<T> arena(G * n.H, groups * n.H, nt);  // d(gh) W_hh for this thread's units
  const PackCopies<T> w_ih_copies = dx_copies<T>(G * n.H, n.D, nt, f.ids != nullptr);
  const WeightGradArena<T> wg(n.D + n.H, nt);
  // On row groups each group sums the weight gradients over its own rows (group_weight_grads),
  // group 0 into the scratch itself, the others into `partials`, added after the loop.
  const bool dense = f.ids == nullptr;
  const int width = (dense ? n.D : 0) + n.H;
  const bool own_rows = groups > 1 && wg.packed();
  const Block partials(own_rows ? sizeof(T) * (groups - 1) * H3 * width : 0);
  const PointwiseKernels *pk = std::is_same_v<T, float> ? pointwise_kernels() : nullptr;
  T *dh = a.scratch.dh, *dgh = a.scratch.dgh;
#pragma omp parallel num_threads(nt)
  {
    // The time loop's slice (rows and units: grid_slice), and the whole-sequence products' slice
    // after it (units of every row): the same on one row group.
    const ThreadSlice s = grid_slice(n, groups), u = thread_slice(n.H);
    const int j0 = s.j0, j1 = s.j1, b1 = std::min(s.r1, n.B);
    const StepGemm<T> rec = arena.slice(f.w_hh, n.H, false, j0, j1, s.p, s.group * n.H);
    const int ng = own_rows ? region_groups(groups) : 1;
    // (N,H), dW_hh over all rows by columns
    const T *h_prev = ng > 1 ? nullptr : prev_states(a.scratch.h_prev, f.h_states, n, u.j0, u.j1);
    // A row not active yet (lengths) keeps dh_n until its last step.
    copy_or_zero_block(dh, a.dh_n, s.r0, b1, n.H, j0, j1);
    // The bias gradients: each batch row's dgi and dgh summed over its steps (from the last)
    // inside the loop, while they are in cache, then those row sums in row order after it; one
    // order for every thread count and row grouping. Each thread sums its own rows and units.
    T *s_ih = a.scratch.dw, *s_hh = s_ih + H3 * n.D, *s_bi = s_hh + H3 * n.H, *s_bh = s_bi + H3;
    T *dbi_rows = a.scratch.dbi_rows, *dbh_rows = a.scratch.dbh_rows;  // (B,3H) each
    zero_block(dbi_rows, H3, s.r0, b1, G * j0, G * j1);
    zero_block(dbh_rows, H3, s.r0, b1, G * j0, G * j1);
    for (int t = n.steps() - 1; t >= 0; --t) {
      const Range r = s.rows(n, t);
      const idx row = n.at(t) + r.begin;
      if (!backward_rows(a, t, r, s.k0, s.k1, pk))
        with_dy(a.dy, [&](auto has_dy) {
          for_unit_blocks(g3, s.k0, s.k1,
                          [&](int k, auto w) { backward_block(a, t, r, k, w, has_dy); });
        });
      // r, z, n of a unit sit at the same columns of dgi and dgh: the thread's [3*j0, 3*j1).
      add_rows<T>(dbi_rows + r.begin * H3 + G * j0, H3, a.scratch.dgi + row * H3 + G * j0, H3,
                  r.end - r.begin, G * (j1 - j0));
      add_rows<T>(dbh_rows + r.begin * H3 + G * j0, H3, dgh + row * H3 + G * j0, H3,
                  r.end - r.begin, G * (j1 - j0));
      if (s.shared) {
#pragma omp barrier
      }
      // dh_{t-1}[rows, j0:j1] += d(recurrent pre-activations) W_hh[:, j0:j1]: every column.
      rec.run(dh + r.begin * n.H, n.H, dgh + (n.at(t) + r.begin) * H3, G * n.H, r.end - r.begin,
              true);
    }
    copy_or_zero_block<T>(g.dh0, dh, s.r0, b1, n.H, j0, j1);
    if (ng > 1) {  // this group's share of dW_ih (dense) and dW_hh, its threads' columns
      T *p_ih = s.group == 0 ? s_ih : partials.as<T>() + (s.group - 1) * H3 * width;
      T *p_hh = s.group == 0 ? s_hh : p_ih + (dense ? H3 * n.D : 0);
      group_weight_grads<T>(wg, s, n, G * j0, G * j1, G * n.H, a.scratch.dgi, f.x,
                            dense ? p_ih : nullptr, dgh, f.h_states, p_hh);
    }
    // Every row of dgi and dgh (and of the row sums, and every group's share of dW) is read
    // from here on.
    if (!s.shared || ng > 1) {
#pragma omp barrier
    }
    // Whole-sequence weight gradients of this thread's units, blocked into the scratch, then
    // put back in PyTorch's row order.
    if (u.j1 > u.j0) {
      const int c0 = G * u.j0, c1 = G * u.j1;
      col_sums<T>(s_bh, dbh_rows, n.B, H3, c0, c1);
      if (ng > 1) {
        const T *parts = partials.as<T>();
        if (dense) add_group_partials<T>(s_ih, parts, H3 * width, ng - 1, c0, c1, n.D);
        add_group_partials<T>(s_hh, parts + (dense ? H3 * n.D : 0), H3 * width, ng - 1, c0, c1,
                              n.H);
      } else {
        weight_grads<T>(dgh, G * n.H, N, c0, c1, {{h_prev, n.H, s_hh}}, wg, s.p);
      }
      gru::input_side_grads<T>(g.dw_ih, g.db_ih, s_ih, s_bi, a.scratch.dgi, dbi_rows, f.x, f.ids,
                               a.scratch.dw_onehot, n, u.j0, u.j1, wg, s.p, ng > 1 && dense);
      unblock_gate_rows<T>(g.dw_hh, s_hh, g3, n.H, u.j0, u.j1);
      unblock_gate_rows<T>(g.db_hh, s_bh, g3, 1, u.j0, u.j1);
    }
    // dx = dgi W_ih (both blocked: the sum over gates does not care about their order).
    input_grad_rows<T>(g.dx, a.scratch.dgi, G * n.H, f.w_ih, f.ids, N, n.D, u, w_ih_copies);
  }
}

template void gru_reset_after_forward<float>(const GruForwardArgs<float> &);
template void gru_reset_after_forward<double>(const GruForwardArgs<double> &);
template void gru_reset_after_backward<float>(const GruBackwardArgs<float> &);
template void gru_reset_after_backward<double>(const GruBackwardArgs<double> &);

}  // namespace rnncore
