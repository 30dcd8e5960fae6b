// LSTM, forward and backward side by side.
//
// Shape legend: T steps, B batch, D input size, H hidden size, G = 4 gates (i, f, g, o).
//   x (T,B,D)   w_ih (4H,D)   w_hh (4H,H)   bias (4H)   gates (T,B,4H)
//   h_states, c_states (T+1,B,H), slot 0 = h0, c0
// Gate rows and gate columns are blocked (common/gates.h): the gates of units [j0, j1) are
// the contiguous columns [4*j0, 4*j1).
//
// Threading: one OpenMP region around the time loop; thread p owns hidden units [j0, j1)
// (16-aligned) and with them gate columns [4*j0, 4*j1): its slice of the input projection, of
// each step's recurrent GEMM and of the pointwise update. One barrier per step.
#include "cells/lstm.h"

#include <omp.h>

#include <cstddef>

#include "common/activations.h"
#include "common/blas.h"
#include "common/gates.h"
#include "common/input.h"
#include "common/step_gemm.h"
#include "common/threading.h"

namespace rnncore {

namespace {

using idx = std::ptrdiff_t;
constexpr int G = 4;

// One step's pointwise update for units of block k, all B rows: activates the gate
// pre-activations in place and writes c_t, h_t.
// W: the block's width when known at compile time (every block but a partial last one), else 0
// (with_block_width in common/gates.h chooses).
template <typename T, int W>
void lstm_cell_block_w(T *gates_t, T *c, T *h, const T *c_prev, const T *bias, GateBlocks gb, int k,
                       int B, int H) {
  const int w = W ? W : gb.width(k);
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

// Backward of one step for units of block k: from dh (incoming, + dy) and dc (incoming) to
// the gate pre-activation gradients dgates_t; dc is replaced by dc_{t-1} in place.
template <typename T, int W>
void lstm_cell_block_backward_w(T *dgates_t, T *dc, const T *dh, const T *dy_t, const T *gates_t,
                                const T *c, const T *c_prev, GateBlocks gb, int k, int B, int H) {
  const int w = W ? W : gb.width(k);
  const idx base = gb.begin(k);
  const int j0 = k * kUnitBlock;
  for (int b = 0; b < B; ++b) {
    const idx go_ = static_cast<idx>(b) * G * H + base;
    const T *i = gates_t + go_, *f = i + w, *g = f + w, *o = g + w;
    T *di = dgates_t + go_, *df = di + w, *dg = df + w, *do_ = dg + w;
    const idx r = static_cast<idx>(b) * H + j0;
    const T *dhr = dh + r, *cr = c + r, *cp = c_prev + r;
    const T *dyr = dy_t ? dy_t + r : nullptr;
    T *dcr = dc + r;
    if (dyr) {
#pragma omp simd
      for (int u = 0; u < w; ++u) {
        const T tc = tanh_f(cr[u]);
        const T dht = dhr[u] + dyr[u];
        const T dct = dcr[u] + dht * o[u] * (T(1) - tc * tc);
        do_[u] = dht * tc * o[u] * (T(1) - o[u]);
        di[u] = dct * g[u] * i[u] * (T(1) - i[u]);
        dg[u] = dct * i[u] * (T(1) - g[u] * g[u]);
        df[u] = dct * cp[u] * f[u] * (T(1) - f[u]);
        dcr[u] = dct * f[u];
      }
    } else {
#pragma omp simd
      for (int u = 0; u < w; ++u) {
        const T tc = tanh_f(cr[u]);
        const T dht = dhr[u];
        const T dct = dcr[u] + dht * o[u] * (T(1) - tc * tc);
        do_[u] = dht * tc * o[u] * (T(1) - o[u]);
        di[u] = dct * g[u] * i[u] * (T(1) - i[u]);
        dg[u] = dct * i[u] * (T(1) - g[u] * g[u]);
        df[u] = dct * cp[u] * f[u] * (T(1) - f[u]);
        dcr[u] = dct * f[u];
      }
    }
  }
}

template <typename T>
void lstm_cell_block(T *gates_t, T *c, T *h, const T *c_prev, const T *bias, GateBlocks gb, int k,
                     int B, int H) {
  with_block_width(gb.width(k), [&](auto width) {
    lstm_cell_block_w<T, decltype(width)::value>(gates_t, c, h, c_prev, bias, gb, k, B, H);
  });
}

template <typename T>
void lstm_cell_block_backward(T *dgates_t, T *dc, const T *dh, const T *dy_t, const T *gates_t,
                              const T *c, const T *c_prev, GateBlocks gb, int k, int B, int H) {
  with_block_width(gb.width(k), [&](auto width) {
    lstm_cell_block_backward_w<T, decltype(width)::value>(dgates_t, dc, dh, dy_t, gates_t, c,
                                                          c_prev, gb, k, B, H);
  });
}

}  // namespace

template <typename T>
void lstm_forward(T *hs, T *cs, T *gates, const T *x, const std::int32_t *ids, const T *h0,
                  const T *c0, const T *w_ih, const T *w_hh, const T *bias, int T_, int B, int D,
                  int H) {
  if (T_ == 0 || B == 0 || H == 0) return;
  const idx BH = static_cast<idx>(B) * H, BG = BH * G;
  const GateBlocks gb{H, G};
  const int nt = threads_for(2.0 * B * G * H * H, gb.blocks());
  const PackArena<T> arena(H, G * H, nt);
#pragma omp parallel num_threads(nt)
  {
    const int np = omp_get_num_threads(), p = np > 1 ? omp_get_thread_num() : 0;
    const Range r = split(H, np, p, kUnitBlock);  // this thread's hidden units
    const int k0 = r.begin / kUnitBlock, k1 = (r.end + kUnitBlock - 1) / kUnitBlock;
    // h W_hh^T for the gate columns of this thread's units [4*j0, 4*j1).
    const StepGemm<T> rec = arena.slice(w_hh, H, true, G * r.begin, G * r.end, p);
    // Input projection of all T*B rows, this thread's gate columns.
    input_projection<T>(gates, G * H, x, ids, w_ih, T_ * B, D, G * r.begin, G * r.end);
    for (int t = 0; t < T_; ++t) {
      const T *h_prev = t == 0 ? h0 : hs + (t - 1) * BH;  // (B,H)
      const T *c_prev = t == 0 ? c0 : cs + (t - 1) * BH;  // (B,H)
      T *g = gates + t * BG;                              // (B,4H)
      rec.run(g, G * H, h_prev, H, B, true);
      for (int k = k0; k < k1; ++k)
        lstm_cell_block<T>(g, cs + t * BH, hs + t * BH, c_prev, bias, gb, k, B, H);
#pragma omp barrier
    }
  }
}

template <typename T>
void lstm_backward(T *dx, T *dh0, T *dc0, T *dw_ih, T *dw_hh, T *db, T *dgates, T *dw_scratch,
                   T *dh, const T *dy, const T *dh_n, const T *dc_n, const T *h_states,
                   const T *c_states, const T *gates, const T *x, const std::int32_t *ids,
                   const T *w_ih, const T *w_hh, int T_, int B, int D, int H) {
  const idx BH = static_cast<idx>(B) * H, BG = BH * G;
  const int TB = T_ * B;
  const GateBlocks gb{H, G};
  if (TB == 0 || H == 0) {  // nothing flows through time
    for (idx i = 0; i < BH; ++i) dh0[i] = dh_n ? dh_n[i] : T(0);
    for (idx i = 0; i < BH; ++i) dc0[i] = dc_n ? dc_n[i] : T(0);
    std::fill(dw_ih, dw_ih + static_cast<idx>(G) * H * D, T(0));
    std::fill(dw_hh, dw_hh + static_cast<idx>(G) * H * H, T(0));
    std::fill(db, db + static_cast<idx>(G) * H, T(0));
    if (!ids) std::fill(dx, dx + static_cast<idx>(TB) * D, T(0));
    return;
  }
  const int nt = threads_for(2.0 * B * G * H * H, gb.blocks());
  const PackArena<T> arena(G * H, H, nt);
#pragma omp parallel num_threads(nt)
  {
    const int np = omp_get_num_threads(), p = np > 1 ? omp_get_thread_num() : 0;
    const Range r = split(H, np, p, kUnitBlock);
    const int j0 = r.begin, j1 = r.end;
    const StepGemm<T> rec = arena.slice(w_hh, H, false, j0, j1, p);  // dgates W_hh
    const int k0 = j0 / kUnitBlock, k1 = (j1 + kUnitBlock - 1) / kUnitBlock;
    // dc runs in dc0 (each thread its own units); dh holds the incoming dh of the step.
    for (int b = 0; b < B; ++b)
      for (int j = j0; j < j1; ++j) {
        const idx i = static_cast<idx>(b) * H + j;
        dc0[i] = dc_n ? dc_n[i] : T(0);
        dh[i] = dh_n ? dh_n[i] : T(0);
      }
    for (int t = T_ - 1; t >= 0; --t) {
      const T *dy_t = dy ? dy + t * BH : nullptr;
      for (int k = k0; k < k1; ++k)
        lstm_cell_block_backward<T>(dgates + t * BG, dc0, dh, dy_t, gates + t * BG,
                                    c_states + (t + 1) * BH, c_states + t * BH, gb, k, B, H);
#pragma omp barrier
      // dh_{t-1}[:, j0:j1] needs every gate column of dgates[t]: after the barrier.
      rec.run(t > 0 ? dh : dh0, H, dgates + t * BG, G * H, B, false);
    }
    // Whole-sequence weight gradients for this thread's gate rows [4*j0, 4*j1), computed in
    // the blocked order into the scratch, then put back in PyTorch's order.
    if (j1 > j0) {
      const int c0 = G * j0, c1 = G * j1;
      T *s_ih = dw_scratch, *s_hh = s_ih + static_cast<idx>(G) * H * D,
        *s_b = s_hh + static_cast<idx>(G) * H * H;
      input_weight_grad<T>(s_ih, dgates, G * H, x, ids, TB, D, G * H, c0, c1, dx);
      gemm_rows<T>(c0, c1, true, false, H, TB, dgates, G * H, h_states, H, T(0), s_hh, H);
      for (int c = c0; c < c1; ++c) s_b[c] = T(0);
      for (idx i = 0; i < TB; ++i) {
        const T *row = dgates + i * G * H;
#pragma omp simd
        for (int c = c0; c < c1; ++c) s_b[c] += row[c];
      }
      unblock_gate_rows<T>(dw_ih, s_ih, gb, D, j0, j1);
      unblock_gate_rows<T>(dw_hh, s_hh, gb, H, j0, j1);
      unblock_gate_rows<T>(db, s_b, gb, 1, j0, j1);
    }
    // dx = dgates W_ih: the sum over gates does not care about their order.
    if (!ids) {
      const Range rows = split(TB, np, p, 1);
      gemm_rows<T>(rows.begin, rows.end, false, false, D, G * H, dgates, G * H, w_ih, D, T(0), dx,
                   D);
    }
  }
}

#define RNNCORE_INSTANTIATE(T)                                                                     \
  template void lstm_forward<T>(T *, T *, T *, const T *, const std::int32_t *, const T *,         \
                                const T *, const T *, const T *, const T *, int, int, int, int);   \
  template void lstm_backward<T>(T *, T *, T *, T *, T *, T *, T *, T *, T *, const T *,           \
                                 const T *, const T *, const T *, const T *, const T *, const T *, \
                                 const std::int32_t *, const T *, const T *, int, int, int, int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
