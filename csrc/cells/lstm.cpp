// LSTM, forward and backward side by side.
//
// Shape legend: T steps, B batch, D input size, H hidden size, G = 4 gates (i, f, g, o).
//   x (T,B,D)   w_ih (4H,D)   w_hh (4H,H)   bias (4H)   gates, dgates (T,B,4H)
//   h_states, c_states (T+1,B,H), slot 0 = h0, c0   dh, dc (B,H)
// Gate rows and gate columns are blocked (common/gates.h): the gates of units [j0, j1) are
// the contiguous columns [4*j0, 4*j1).
//
// Threading: one OpenMP region around the time loop; thread p owns hidden units [j0, j1)
// (16-aligned) and with them gate columns [4*j0, 4*j1): its slice of the input projection, of
// each step's recurrent GEMM and of the pointwise update. One barrier per step. Where the batch
// allows (common/sequence.h row_groups) the threads form groups that own batch rows instead;
// with one thread a group the time loop has no barrier at all. The weight gradients and dx
// after the loop split every row's work by units and by rows as before.
#include "cells/lstm.h"

#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <type_traits>

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

constexpr int G = 4;

// One step's pointwise update for units of block k (width w: common/gates.h for_unit_blocks),
// all B rows: activates the gate pre-activations in place and writes c_t, h_t.
template <typename T, typename W>
void lstm_cell_block(T *gates_t, T *c, T *h, const T *c_prev, const T *bias, GateBlocks gb, int k,
                     W w, int B, int H) {
  const idx base = gb.begin(k);
  const int j0 = k * kUnitBlock;
  const T *bi = bias + base, *bf = bi + w, *bg = bf + w, *bo = bg + w;
  for (int b = 0; b < B; ++b) {
    T *gi = gates_t + static_cast<idx>(b) * G * H + base;
    T *gf = gi + w, *gg = gf + w, *go = gg + w;
    const idx r = static_cast<idx>(b) * H + j0;
    T *cr = c + r, *hr = h + r;
    const T *cp = c_prev + r;
#pragma omp simd
    for (int u = 0; u < w; ++u) {
      const T i = sigmoid_f(gi[u] + bi[u]), f = sigmoid_f(gf[u] + bf[u]);
      const T g = tanh_f(gg[u] + bg[u]), o = sigmoid_f(go[u] + bo[u]);
      const T ct = f * cp[u] + i * g;
      gi[u] = i, gf[u] = f, gg[u] = g, go[u] = o;
      cr[u] = ct;
      hr[u] = o * tanh_f(ct);
    }
  }
}

// Backward of one step for units of block k: from dh (incoming) + dy and dc (incoming) to the
// gate pre-activation gradients dgates_t; dc is replaced by dc_{t-1} in place.
template <typename T, typename W, typename HasDy>
void lstm_cell_block_backward(T *dgates_t, T *dc, const T *dh, const T *dy_t, const T *gates_t,
                              const T *c, const T *c_prev, GateBlocks gb, int k, W w, HasDy has_dy,
                              int B, int H) {
  const idx base = gb.begin(k);
  const int j0 = k * kUnitBlock;
  for (int b = 0; b < B; ++b) {
    const idx go_ = static_cast<idx>(b) * G * H + base;
    const T *i = gates_t + go_, *f = i + w, *g = f + w, *o = g + w;
    T *di = dgates_t + go_, *df = di + w, *dg = df + w, *do_ = dg + w;
    const idx r = static_cast<idx>(b) * H + j0;
    const T *dhr = dh + r, *cr = c + r, *cp = c_prev + r;
    const T *dyr = has_dy ? dy_t + r : nullptr;
    T *dcr = dc + r;
#pragma omp simd
    for (int u = 0; u < w; ++u) {
      const T tc = tanh_f(cr[u]);
      const T dht = has_dy ? dhr[u] + dyr[u] : dhr[u];
      const T dct = dcr[u] + dht * o[u] * (T(1) - tc * tc);
      do_[u] = dht * tc * o[u] * (T(1) - o[u]);
      di[u] = dct * g[u] * i[u] * (T(1) - i[u]);
      dg[u] = dct * i[u] * (T(1) - g[u] * g[u]);
      df[u] = dct * cp[u] * f[u] * (T(1) - f[u]);
      dcr[u] = dct * f[u];
    }
  }
}

}  // namespace

template <typename T>
void LstmWorkspace<T>::prepare(const SeqInputs<T> &in, SeqSizes n) const {
  const GateBlocks gb{n.H, G};
  keep_inputs(seq, in, n);
  keep_state(c_states, in.c0, n);
  layout_input_weights<T>(seq.w_ih, in.w_ih, gb, n.D, in.ids != nullptr);
  block_gate_rows<T>(seq.w_hh, in.w_hh, gb, n.H);
  sum_bias_blocked<T>(bias, in.b_ih, in.b_hh, gb);
}

template <typename T>
void LstmWorkspace<T>::read_outputs(T *y, T *h_n, T *c_n, SeqSizes n) const {
  rnncore::read_outputs(y, h_n, seq, n);
  if (n.order)
    final_rows(c_n, c_states, c_states + n.BH(), n.H, *n.order, n.B);
  else
    std::memcpy(c_n, c_states + n.T * n.BH(), static_cast<std::size_t>(n.BH()) * sizeof(T));
}

template <typename T>
void lstm_forward(const LstmForwardArgs<T> &a) {
  const SeqSizes n = a.n;
  if (empty_sequence(n)) return;
  const idx H = n.H, GH = G * H;
  const GateBlocks gb{n.H, G};
  const int nt = cell_threads(n, G);
  const bool one_hot = a.ids != nullptr, streams = a.stream_in || a.stream_out;
  const bool packed = packed_rows<T>(one_hot || input_side_packed(n.D, G * n.H));
  const int groups = streams ? 1 : row_groups(n, G, nt, packed);
  const PackArena<T> arena(n.H, groups * G * n.H, nt);
  const PackArena<T> in_arena = input_arena<T>(n.D, groups * G * n.H, nt, one_hot);
  const PointwiseKernels *pk = std::is_same_v<T, float> ? pointwise_kernels() : nullptr;
#pragma omp parallel num_threads(nt)
  {
    const ThreadSlice s = grid_slice(n, groups);
    const int base = s.group * G * n.H;  // its group's packed copies
    // h W_hh^T for the gate columns of this thread's units [4*j0, 4*j1).
    const StepGemm<T> rec = arena.slice(a.w_hh, n.H, true, G * s.j0, G * s.j1, s.p, base);
    // Input projection of the rows that run, this thread's gate columns, a chunk ahead.
    const T *x = a.stream_in ? a.stream_in->template data<T>() : a.x;
    InputProjection<T> in(a.gates, G * n.H, x, a.ids, a.w_ih, n.D, G * s.j0, G * s.j1, in_arena,
                          s.p, n, a.stream_in, {s.r0, s.r1}, base);
    for (int t = 0; t < n.steps(); ++t) {
      in.before(t);
      // This thread's rows [r.begin, r.end) of step t, and the same rows of step t-1.
      const Range r = s.rows(n, t);
      const idx row = n.at(t) + r.begin, prev = t == 0 ? r.begin : n.at(t - 1) + r.begin;
      const T *h_prev = (t == 0 ? a.h0 : a.hs) + prev * H;  // (M,H)
      const T *c_prev = (t == 0 ? a.c0 : a.cs) + prev * H;  // (M,H)
      T *g = a.gates + row * GH;                            // (M,4H)
      const int M = r.end - r.begin;
      T *c = a.cs + row * H, *h = a.hs + row * H;
      // Each tile of the product (gates += h_{t-1} W_hh^T), then its units' update.
      fused_step(rec, g, G * n.H, h_prev, n.H, M, true, gb, G * kUnitBlock, s, [&](int k, auto w) {
        if constexpr (std::is_same_v<T, float>)
          if (pk) {
            pk->lstm_forward(g, c, h, c_prev, a.bias, gb.begin(k), k * kUnitBlock, gb.width(k), M,
                             n.H);
            return;
          }
        lstm_cell_block<T>(g, c, h, c_prev, a.bias, gb, k, w, M, n.H);
      });
      if (a.stream_out) stream_rows(*a.stream_out, h, t, M, n.H, s.j0, s.j1);
      if (s.shared) {
#pragma omp barrier
      }
      if (a.stream_out && s.p == 0) a.stream_out->relay(t + 1, a.stream_in);
    }
  }
}

template <typename T>
void lstm_backward(const LstmBackwardArgs<T> &a) {
  const SeqSizes n = a.n;
  const LstmGrads<T> &g = a.out;
  const SeqBuffers<T> &f = a.fwd.seq;
  const idx BH = n.BH(), H = n.H, GH = static_cast<idx>(G) * n.H;
  const int TB = n.TB();
  const GateBlocks gb{n.H, G};
  if (empty_sequence(n)) {
    empty_sequence_grads<T>(
        {{g.dh0, a.dh_n}, {g.dc0, a.dc_n}}, BH,
        {{g.dw_ih, GH * n.D}, {g.dw_hh, GH * n.H}, {g.db, GH}, {g.dx, TB * n.D}});
    return;
  }
  T *dgates = a.scratch.dgates, *dh = a.scratch.dh;
  const T *c_states = a.fwd.c_states, *gates = a.fwd.gates;
  const int nt = cell_threads(n, G), N = n.N();
  const bool streams = a.stream_in || a.stream_out;
  const int groups = streams ? 1 : row_groups(n, G, nt, packed_rows<T>(true));
  const PackArena<T> arena(G * n.H, groups * n.H, nt);
  const PackCopies<T> w_ih_copies = dx_copies<T>(G * n.H, n.D, nt, f.ids != nullptr);
  const WeightGradArena<T> wg(n.D + n.H, nt);
  // On row groups each group sums the weight gradients over its own rows (RowGrads), group 0
  // into the scratch itself, the others into `partials`, added after the loop.
  const bool dense = f.ids == nullptr;
  const int width = (dense ? n.D : 0) + n.H;
  const bool own_rows = groups > 1 && wg.packed();
  const Block partials(own_rows ? sizeof(T) * (groups - 1) * GH * width : 0);
  const PointwiseKernels *pk = std::is_same_v<T, float> ? pointwise_kernels() : nullptr;
#pragma omp parallel num_threads(nt)
  {
    // The time loop's slice (rows and units: grid_slice), and the whole-sequence products' slice
    // after it (units of every row): the same on one row group.
    const ThreadSlice s = grid_slice(n, groups), u = thread_slice(n.H);
    const int j0 = s.j0, j1 = s.j1;
    const StepGemm<T> rec = arena.slice(f.w_hh, n.H, false, j0, j1, s.p, s.group * n.H);
    const int ng = own_rows ? region_groups(groups) : 1;
    // (N,H), dW_hh over all rows by columns
    const T *h_prev = ng > 1 ? nullptr : prev_states(a.scratch.h_prev, f.h_states, n, u.j0, u.j1);
    // dc runs in dc0 (each thread its own rows and units); dh holds the incoming dh of the step.
    // A row not active yet (lengths) keeps dh_n, dc_n until its last step.
    const int b1 = std::min(s.r1, n.B);
    copy_or_zero_block(g.dc0, a.dc_n, s.r0, b1, n.H, j0, j1);
    copy_or_zero_block(dh, a.dh_n, s.r0, b1, n.H, j0, j1);
    // The bias gradient (blocked order): each batch row's dgates summed over its steps (from
    // the last) inside the loop, while they are in cache, then those row sums in row order
    // after it. Each thread sums its own rows and units, and the order is that for every
    // thread count and row grouping.
    T *s_ih = a.scratch.dw, *s_hh = s_ih + GH * n.D, *s_b = s_hh + GH * n.H;
    T *db_rows = a.scratch.db_rows;  // (B,4H)
    zero_block(db_rows, GH, s.r0, b1, G * j0, G * j1);
    // Step t's pointwise backward, this thread's rows and units: dgates[t] and dc_{t-1} from
    // dh (+ dy) and dc. float32: row by row, each row's gates front to back (common/pointwise.h);
    // otherwise block by block. Then each row's dgates into its bias sums.
    const T *dy = a.stream_in ? a.stream_in->template data<T>() : a.dy;
    auto pointwise = [&](int t) {
      const Range r = s.rows(n, t);
      const idx row = n.at(t) + r.begin, prev = t == 0 ? r.begin : n.at(t - 1) + r.begin;
      const T *dy_t = dy ? dy + row * H : nullptr;
      const T *c_prev = t == 0 ? c_states + prev * H : c_states + BH + prev * H;
      const T *c_t = c_states + BH + row * H, *gates_t = gates + row * GH;
      T *dgates_t = dgates + row * GH, *dc = g.dc0 + r.begin * H;
      const T *dh_t = dh + r.begin * H;
      const int M = r.end - r.begin;
      bool done = false;
      if constexpr (std::is_same_v<T, float>)
        if (pk) {
          pk->lstm_backward(dgates_t, dc, dh_t, dy_t, gates_t, c_t, c_prev, s.k0, s.k1, M, n.H);
          done = true;
        }
      if (!done)
        with_dy(dy_t, [&](auto has_dy) {
          for_unit_blocks(gb, s.k0, s.k1, [&](int k, auto w) {
            lstm_cell_block_backward<T>(dgates_t, dc, dh_t, dy_t, gates_t, c_t, c_prev, gb, k, w,
                                        has_dy, M, n.H);
          });
        });
      add_rows<T>(db_rows + r.begin * GH + G * j0, GH, dgates_t + G * j0, GH, M, G * (j1 - j0));
    };
    const int last = n.steps() - 1;
    // The wavefront (full length only): dy of step t is published once the layer above has
    // done its steps t..T-1; this layer's dx of step t goes out after this step's barrier.
    const StepStream *up = a.stream_in;
    StepStream *down = a.stream_out;
    const StepGemm<T> dx_step =
        down ? w_ih_copies.copy(f.w_ih, n.D, false, s.p)
             : StepGemm<T>(nullptr, 0, false, 0, 0, 0, nullptr, GemmPath::Blas);
    const Range own = split(n.B, s.np, s.p, 1);  // this thread's rows of a step's dx
    auto send_dx = [&](int t) {  // dgates[t] complete: dx rows of step t, times the mask
      T *rows = down->template data<T>() + (n.at(t) + own.begin) * n.D;
      dx_step.run(rows, n.D, dgates + (n.at(t) + own.begin) * GH, G * n.H, own.end - own.begin,
                  false);
      if (down->mask)
        write_masked(rows, rows, down->template mask_data<T>() + (n.at(t) + own.begin) * n.D,
                     static_cast<idx>(own.end - own.begin) * n.D);
    };
    if (up) up->wait(n.steps() - last);
    pointwise(last);
    if (s.shared) {
#pragma omp barrier
    }
    for (int t = last; t >= 0; --t) {
      if (down) send_dx(t);
      if (up && t > 0) up->wait(n.steps() - t + 1);
      // dh_{t-1}[rows, j0:j1] = dgates[t] W_hh needs every gate column of dgates[t] (after the
      // barrier), then step t-1's pointwise. Not fused tile by tile as the forward is: dh is a
      // few KB that stays in L1 either way, and the pointwise pass is faster row by row
      // (measured: 4.4% of the charrnn-L2 stack's fwd+bwd on 1 thread, 2.3% on 2).
      const Range r = s.rows(n, t);
      rec.run((t > 0 ? dh : g.dh0) + r.begin * H, n.H, dgates + (n.at(t) + r.begin) * GH, G * n.H,
              r.end - r.begin, false);
      if (t > 0) {
        pointwise(t - 1);
        if (s.shared) {
#pragma omp barrier
        }
        if (down && s.p == 0) down->relay(n.steps() - t, up);
      }
    }
    if (down) {
#pragma omp barrier
      if (s.p == 0) down->relay(n.steps(), up);
    }
    // Rows of length 0 (lengths): dh0 = dh_n.
    const int b0 = std::max(s.r0, n.rows(0));
    if (b1 > b0) copy_or_zero_block(g.dh0, dh, b0, b1, n.H, j0, j1);
    if (ng > 1) {  // this group's share of dW_ih (dense) and dW_hh, its threads' columns
      T *p_ih = s.group == 0 ? s_ih : partials.as<T>() + (s.group - 1) * GH * width;
      T *p_hh = s.group == 0 ? s_hh : p_ih + (dense ? GH * n.D : 0);
      group_weight_grads<T>(wg, s, n, G * j0, G * j1, G * n.H, dgates, f.x, dense ? p_ih : nullptr,
                            dgates, f.h_states, p_hh);
    }
    // Every row of dgates (and db_rows, and every group's share of dW) is read from here on.
    if (!s.shared || ng > 1) {
#pragma omp barrier
    }
    // Whole-sequence weight gradients for this thread's gate rows [4*j0, 4*j1), computed in
    // the blocked order into the scratch, then put back in PyTorch's order.
    if (u.j1 > u.j0) {
      const int c0 = G * u.j0, c1 = G * u.j1;
      col_sums<T>(s_b, db_rows, n.B, GH, c0, c1);
      if (ng > 1) {
        const T *parts = partials.as<T>();
        if (dense) add_group_partials<T>(s_ih, parts, GH * width, ng - 1, c0, c1, n.D);
        add_group_partials<T>(s_hh, parts + (dense ? GH * n.D : 0), GH * width, ng - 1, c0, c1,
                              n.H);
        if (!dense)
          input_weight_grad<T>(s_ih, dgates, G * n.H, f.x, f.ids, N, n.D, G * n.H, c0, c1,
                               a.scratch.dw_onehot, wg, s.p);
      } else {
        weight_grads_ih_hh<T>(s_ih, s_hh, dgates, G * n.H, f.x, f.ids, h_prev, N, n.D, n.H, G * n.H,
                              c0, c1, a.scratch.dw_onehot, wg, s.p);
      }
      unblock_gate_rows<T>(g.dw_ih, s_ih, gb, n.D, u.j0, u.j1);
      unblock_gate_rows<T>(g.dw_hh, s_hh, gb, n.H, u.j0, u.j1);
      unblock_gate_rows<T>(g.db, s_b, gb, 1, u.j0, u.j1);
    }
    // dx = dgates W_ih: the sum over gates does not care about their order. (The wavefront
    // sent it step by step.)
    if (!down) input_grad_rows<T>(g.dx, dgates, G * n.H, f.w_ih, f.ids, N, n.D, u, w_ih_copies);
  }
}

#define RNNCORE_INSTANTIATE(T)                               \
  template struct LstmWorkspace<T>;                          \
  template void lstm_forward<T>(const LstmForwardArgs<T> &); \
  template void lstm_backward<T>(const LstmBackwardArgs<T> &);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
