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
// one barrier per step (the next step's GEMM reads every column of h). Each element is always
// computed by a full-length BLAS dot product in the same order, so results do not depend on
// the thread count.
#include "cells/rnn.h"

#include <omp.h>

#include <cstddef>

#include "common/activations.h"
#include "common/blas.h"
#include "common/input.h"
#include "common/step_gemm.h"
#include "common/threading.h"

namespace rnncore {

namespace {

constexpr int kColAlign = 16;  // 64 bytes of float: slices never share a cache line

using idx = std::ptrdiff_t;

// h_t = act(pre + bias) in place over columns [j0, j1) of B rows. Branch-free loop bodies
// (the activation and the presence of dy are decided outside) so that GCC vectorises them.
template <typename T>
void activate(T *h, const T *bias, Activation act, int B, int H, int j0, int j1) {
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
  for (int b = 0; b < B; ++b) {
    const idx o = static_cast<idx>(b) * H;
    T *gr = g + o;
    const T *hr = h + o;
    if (dy) {
      const T *dyr = dy + o;
      if (act == Activation::Tanh) {
#pragma omp simd
        for (int j = j0; j < j1; ++j) gr[j] = (gr[j] + dyr[j]) * act_grad(Activation::Tanh, hr[j]);
      } else {
#pragma omp simd
        for (int j = j0; j < j1; ++j) gr[j] = (gr[j] + dyr[j]) * act_grad(Activation::Relu, hr[j]);
      }
    } else if (act == Activation::Tanh) {
#pragma omp simd
      for (int j = j0; j < j1; ++j) gr[j] = gr[j] * act_grad(Activation::Tanh, hr[j]);
    } else {
#pragma omp simd
      for (int j = j0; j < j1; ++j) gr[j] = gr[j] * act_grad(Activation::Relu, hr[j]);
    }
  }
}

}  // namespace

template <typename T>
void rnn_forward(T *hs, const T *x, const std::int32_t *ids, const T *h0, const T *w_ih,
                 const T *w_hh, const T *bias, Activation act, int T_, int B, int D, int H) {
  if (T_ == 0 || B == 0 || H == 0) return;
  const idx BH = static_cast<idx>(B) * H;
  const int nt = threads_for(2.0 * B * H * H, (H + kColAlign - 1) / kColAlign);
  const PackArena<T> arena(H, H, nt);
#pragma omp parallel num_threads(nt)
  {
    const int p = omp_get_num_threads() > 1 ? omp_get_thread_num() : 0;
    const Range r = split(H, omp_get_num_threads(), p, kColAlign);
    const StepGemm<T> rec = arena.slice(w_hh, H, true, r.begin, r.end, p);  // h W_hh^T
    // Input projection of all T*B rows, this thread's columns: hs[:, :, j0:j1] = x W_ih[j0:j1]^T
    input_projection<T>(hs, H, x, ids, w_ih, T_ * B, D, r.begin, r.end);
    for (int t = 0; t < T_; ++t) {
      const T *h_prev = t == 0 ? h0 : hs + (t - 1) * BH;  // (B,H)
      T *h = hs + t * BH;                                 // (B,H)
      rec.run(h, H, h_prev, H, B, true);
      activate<T>(h, bias, act, B, H, r.begin, r.end);
#pragma omp barrier
    }
  }
}

template <typename T>
void rnn_backward(T *dx, T *dh0, T *dw_ih, T *dw_hh, T *db, T *dpre, const T *dy, const T *dh_n,
                  const T *states, const T *x, const std::int32_t *ids, const T *w_ih,
                  const T *w_hh, Activation act, int T_, int B, int D, int H) {
  const idx BH = static_cast<idx>(B) * H;
  const int TB = T_ * B;
  if (TB == 0 || H == 0) {  // nothing flows through time: dh0 = dh_n, the rest is zero
    for (idx i = 0; i < BH; ++i) dh0[i] = dh_n ? dh_n[i] : T(0);
    for (idx i = 0; i < static_cast<idx>(H) * D; ++i) dw_ih[i] = T(0);
    for (idx i = 0; i < static_cast<idx>(H) * H; ++i) dw_hh[i] = T(0);
    for (int j = 0; db && j < H; ++j) db[j] = T(0);
    if (!ids)
      for (idx i = 0; i < static_cast<idx>(TB) * D; ++i) dx[i] = T(0);
    return;
  }
  const int nt = threads_for(2.0 * B * H * H, (H + kColAlign - 1) / kColAlign);
  const PackArena<T> arena(H, H, nt);
#pragma omp parallel num_threads(nt)
  {
    const int np = omp_get_num_threads();
    const int p = np > 1 ? omp_get_thread_num() : 0;
    const Range r = split(H, np, p, kColAlign);
    const int j0 = r.begin, j1 = r.end;
    const StepGemm<T> rec = arena.slice(w_hh, H, false, j0, j1, p);  // dpre W_hh
    // Last step: dpre[T-1] = (dy[T-1] + dh_n) * act'(h_T).
    T *g = dpre + (T_ - 1) * BH;  // (B,H)
    for (int b = 0; b < B; ++b)
      for (int j = j0; j < j1; ++j)
        g[b * static_cast<idx>(H) + j] = dh_n ? dh_n[b * static_cast<idx>(H) + j] : T(0);
    activate_backward<T>(g, dy ? dy + (T_ - 1) * BH : nullptr, states + T_ * BH, act, B, H, j0, j1);
#pragma omp barrier
    for (int t = T_ - 1; t >= 0; --t) {
      // dh_{t-1} lands directly in dpre[t-1] (or dh0), then becomes dpre[t-1] in place.
      T *g_prev = t > 0 ? dpre + (t - 1) * BH : dh0;  // (B,H)
      rec.run(g_prev, H, dpre + t * BH, H, B, false);
      if (t > 0)
        activate_backward<T>(g_prev, dy ? dy + (t - 1) * BH : nullptr, states + t * BH, act, B, H,
                             j0, j1);
#pragma omp barrier
    }
    // Whole-sequence weight gradients, this thread's rows (= its hidden units):
    //   dW_ih[j0:j1] = dpre[:, :, j0:j1]^T x,  dW_hh[j0:j1] = dpre[:, :, j0:j1]^T h_{0..T-1}.
    if (j1 > j0) {
      input_weight_grad<T>(dw_ih, dpre, H, x, ids, TB, D, H, j0, j1, dx);  // dx: scratch if ids
      gemm_rows<T>(j0, j1, true, false, H, TB, dpre, H, states, H, T(0), dw_hh, H);
    }
    if (db) {
      for (int j = j0; j < j1; ++j) db[j] = T(0);
      for (idx i = 0; i < TB; ++i) {
        const T *row = dpre + i * H;
#pragma omp simd
        for (int j = j0; j < j1; ++j) db[j] += row[j];
      }
    }
    // dx = dpre W_ih, split by rows: every column of dpre is complete after the last barrier.
    if (!ids) {
      const Range rows = split(TB, np, p, 1);
      gemm_rows<T>(rows.begin, rows.end, false, false, D, H, dpre, H, w_ih, D, T(0), dx, D);
    }
  }
}

#define RNNCORE_INSTANTIATE(T)                                                                     \
  template void rnn_forward<T>(T *, const T *, const std::int32_t *, const T *, const T *,         \
                               const T *, const T *, Activation, int, int, int, int);              \
  template void rnn_backward<T>(T *, T *, T *, T *, T *, T *, const T *, const T *, const T *,     \
                                const T *, const std::int32_t *, const T *, const T *, Activation, \
                                int, int, int, int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
