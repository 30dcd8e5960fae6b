// GRU, forward and backward side by side, both variants.
//
// Shape legend: T steps, B batch, D input size, H hidden size, G = 3 gates (r, z, n).
//   x (T,B,D)   w_ih (3H,D)   w_hh (3H,H)   b_ih, b_hh (3H)   gates (T,B,3H)   aux (T,B,H)
//   h_states (T+1,B,H), slot 0 = h0
// Column layouts (gru.h): input-side gates blocked with G = 3 ("gi": r, z, n of a 16-unit
// block side by side); recurrent-side gates ("gh") in w_hh's order: blocked G = 3 when
// reset_after, else r, z blocked G = 2 in columns [0, 2H) and n plain in [2H, 3H).
//
// Threading: one OpenMP region around the time loop; thread p owns hidden units [j0, j1)
// (16-aligned) and the gate columns of those units. reset_after: one GEMM and one barrier per
// step. reset_after = false: W_hn multiplies r ⊙ h of *every* unit, so two of each.
#include "cells/gru.h"

#include <omp.h>

#include <algorithm>
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
constexpr int G = 3;

// Where the r, z, n values of block k live in a row of gi / gh.
struct BlockCols {
  idx r, z, n;
};
inline BlockCols gi_cols(GateBlocks g3, int k) {
  const idx b = g3.begin(k), w = g3.width(k);
  return {b, b + w, b + 2 * w};
}
inline BlockCols gh_cols(GateBlocks g3, GateBlocks g2, bool reset_after, int k) {
  if (reset_after) return gi_cols(g3, k);
  const idx b = g2.begin(k), w = g2.width(k);
  return {b, b + w, static_cast<idx>(2) * g3.H + static_cast<idx>(k) * kUnitBlock};
}

// f(u0, w, ci, ch) for each of a thread's unit blocks k in [k0, k1): the block's first unit, its
// width and its r, z, n columns in gi and gh. A full block's width is passed as
// std::integral_constant<int, kUnitBlock>, so the pointwise loops over it have a constant trip
// count (with_block_width); a partial last block's as an int.
template <typename F>
void for_blocks(int k0, int k1, GateBlocks g3, GateBlocks g2, bool reset_after, F &&f) {
  for (int k = k0; k < k1; ++k)
    with_block_width(g3.width(k), [&](auto width) {
      const int u0 = k * kUnitBlock;
      const BlockCols ci = gi_cols(g3, k), ch = gh_cols(g3, g2, reset_after, k);
      if constexpr (decltype(width)::value != 0)
        f(u0, width, ci, ch);
      else
        f(u0, g3.width(k), ci, ch);
    });
}

// out[c0:c1] = column sums over `rows` rows of src (leading dimension ld).
template <typename T>
void col_sums(T *out, const T *src, idx rows, idx ld, int c0, int c1) {
  for (int c = c0; c < c1; ++c) out[c] = T(0);
  for (idx i = 0; i < rows; ++i) {
    const T *row = src + i * ld;
#pragma omp simd
    for (int c = c0; c < c1; ++c) out[c] += row[c];
  }
}

}  // namespace

template <typename T>
void gru_forward(T *hs, T *gates, T *aux, T *gh, const T *x, const std::int32_t *ids, const T *h0,
                 const T *w_ih, const T *w_hh, const T *b_ih, const T *b_hh, bool reset_after,
                 int T_, int B, int D, int H) {
  if (T_ == 0 || B == 0 || H == 0) return;
  const idx BH = static_cast<idx>(B) * H, BG = BH * G, H3 = static_cast<idx>(G) * H;
  const GateBlocks g3{H, 3}, g2{H, 2};
  const T *w_hn = w_hh + 2 * static_cast<idx>(H) * H;  // (H,H) plain rows (reset_after = false)
  const int nt = threads_for(2.0 * B * G * H * H, g3.blocks());
  // reset_after: h W_hh^T for all three gates; else h W_rz^T (2H columns) and (r ⊙ h) W_hn^T.
  const PackArena<T> arena(H, reset_after ? G * H : 2 * H, nt), arena_n(H, reset_after ? 0 : H, nt);
#pragma omp parallel num_threads(nt)
  {
    const int np = omp_get_num_threads(), p = np > 1 ? omp_get_thread_num() : 0;
    const Range r = split(H, np, p, kUnitBlock);
    const int j0 = r.begin, j1 = r.end;
    const int k0 = j0 / kUnitBlock, k1 = (j1 + kUnitBlock - 1) / kUnitBlock;
    const int gates_here = reset_after ? G : 2;
    const StepGemm<T> rec = arena.slice(w_hh, H, true, gates_here * j0, gates_here * j1, p);
    const StepGemm<T> rec_n =
        arena_n.slice(w_hn, H, true, reset_after ? 0 : j0, reset_after ? 0 : j1, p);
    // Input projection, this thread's gate columns.
    input_projection<T>(gates, G * H, x, ids, w_ih, T_ * B, D, G * j0, G * j1);
    for (int t = 0; t < T_; ++t) {
      const T *hp = t == 0 ? h0 : hs + (t - 1) * BH;  // (B,H) h_{t-1}
      T *gt = gates + t * BG, *at = aux + t * BH, *ht = hs + t * BH;
      rec.run(gh, G * H, hp, H, B, false);
      for_blocks(k0, k1, g3, g2, reset_after, [&](int u0, auto w, BlockCols ci, BlockCols ch) {
        for (int b = 0; b < B; ++b) {
          T *gi = gt + b * H3, *gr = gh + b * H3;
          const T *hpb = hp + b * static_cast<idx>(H) + u0;
          T *ab = at + b * static_cast<idx>(H) + u0;
          T *ir = gi + ci.r, *iz = gi + ci.z;
          const T *hr = gr + ch.r, *hz = gr + ch.z;
          const T *bir = b_ih + ci.r, *biz = b_ih + ci.z, *bhr = b_hh + ch.r, *bhz = b_hh + ch.z;
          if (reset_after) {
            T *in = gi + ci.n, *hb = ht + b * static_cast<idx>(H) + u0;
            const T *hn = gr + ch.n, *bin = b_ih + ci.n, *bhn = b_hh + ch.n;
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
          } else {
#pragma omp simd
            for (int u = 0; u < w; ++u) {
              const T rr = sigmoid_f(ir[u] + bir[u] + hr[u] + bhr[u]);
              const T zz = sigmoid_f(iz[u] + biz[u] + hz[u] + bhz[u]);
              ir[u] = rr, iz[u] = zz;
              ab[u] = rr * hpb[u];  // r ⊙ h_{t-1}: the input of W_hn
            }
          }
        }
      });
      if (!reset_after) {
#pragma omp barrier
        // n's recurrent term needs r ⊙ h of every unit.
        rec_n.run(gh + 2 * static_cast<idx>(H), G * H, at, H, B, false);
        for_blocks(k0, k1, g3, g2, false, [&](int u0, auto w, BlockCols ci, BlockCols ch) {
          for (int b = 0; b < B; ++b) {
            T *gi = gt + b * H3;
            const T *gr = gh + b * H3, *hpb = hp + b * static_cast<idx>(H) + u0;
            T *in = gi + ci.n, *hb = ht + b * static_cast<idx>(H) + u0;
            const T *zz = gi + ci.z, *hn = gr + ch.n, *bin = b_ih + ci.n, *bhn = b_hh + ch.n;
#pragma omp simd
            for (int u = 0; u < w; ++u) {
              const T nn = tanh_f(in[u] + bin[u] + hn[u] + bhn[u]);
              in[u] = nn;
              hb[u] = nn + zz[u] * (hpb[u] - nn);
            }
          }
        });
      }
#pragma omp barrier
    }
  }
}

template <typename T>
void gru_backward(T *dx, T *dh0, T *dw_ih, T *dw_hh, T *db_ih, T *db_hh, T *dgi, T *dgh,
                  T *dw_scratch, T *dh, T *drh, const T *dy, const T *dh_n, const T *h_states,
                  const T *gates, const T *aux, const T *x, const std::int32_t *ids, const T *w_ih,
                  const T *w_hh, bool reset_after, int T_, int B, int D, int H) {
  const idx BH = static_cast<idx>(B) * H, BG = BH * G, H3 = static_cast<idx>(G) * H;
  const int TB = T_ * B;
  const GateBlocks g3{H, 3}, g2{H, 2};
  if (TB == 0 || H == 0) {  // nothing flows through time
    for (idx i = 0; i < BH; ++i) dh0[i] = dh_n ? dh_n[i] : T(0);
    std::fill(dw_ih, dw_ih + H3 * D, T(0));
    std::fill(dw_hh, dw_hh + H3 * H, T(0));
    std::fill(db_ih, db_ih + H3, T(0));
    std::fill(db_hh, db_hh + H3, T(0));
    if (!ids) std::fill(dx, dx + static_cast<idx>(TB) * D, T(0));
    return;
  }
  const T *w_hn = w_hh + 2 * static_cast<idx>(H) * H;
  const int nt = threads_for(2.0 * B * G * H * H, g3.blocks());
  // d(gh) W_hh for this thread's units (K = 3H, or 2H for the r, z rows), and d(n) W_hn.
  const PackArena<T> arena(reset_after ? G * H : 2 * H, H, nt), arena_n(H, reset_after ? 0 : H, nt);
#pragma omp parallel num_threads(nt)
  {
    const int np = omp_get_num_threads(), p = np > 1 ? omp_get_thread_num() : 0;
    const Range r = split(H, np, p, kUnitBlock);
    const int j0 = r.begin, j1 = r.end;
    const int k0 = j0 / kUnitBlock, k1 = (j1 + kUnitBlock - 1) / kUnitBlock;
    const StepGemm<T> rec = arena.slice(w_hh, H, false, j0, j1, p);
    const StepGemm<T> rec_n =
        arena_n.slice(w_hn, H, false, reset_after ? 0 : j0, reset_after ? 0 : j1, p);
    for (int b = 0; b < B; ++b)
      for (int j = j0; j < j1; ++j) {
        const idx i = static_cast<idx>(b) * H + j;
        dh[i] = dh_n ? dh_n[i] : T(0);
      }
    for (int t = T_ - 1; t >= 0; --t) {
      const T *gt = gates + t * BG, *at = aux + t * BH, *hp = h_states + t * BH;
      const T *dyt = dy ? dy + t * BH : nullptr;
      T *dit = dgi + t * BG, *dht = dgh + t * BG;
      if (dyt)  // dh += dy on this thread's units, so the loops below read one gradient
        for (int b = 0; b < B; ++b) {
          T *dhb = dh + b * static_cast<idx>(H);
          const T *dyb = dyt + b * static_cast<idx>(H);
#pragma omp simd
          for (int j = j0; j < j1; ++j) dhb[j] += dyb[j];
        }
      // Pass 1 (own units): everything that needs only this step's dh.
      for_blocks(k0, k1, g3, g2, reset_after, [&](int u0, auto w, BlockCols ci, BlockCols ch) {
        for (int b = 0; b < B; ++b) {
          const idx o = b * static_cast<idx>(H) + u0;
          const T *rr = gt + b * H3 + ci.r, *zz = gt + b * H3 + ci.z, *nn = gt + b * H3 + ci.n;
          const T *hpb = hp + o, *ab = at + o;
          T *dhb = dh + o;
          T *dir = dit + b * H3 + ci.r, *diz = dit + b * H3 + ci.z, *din = dit + b * H3 + ci.n;
          T *dhr = dht + b * H3 + ch.r, *dhz = dht + b * H3 + ch.z, *dhn = dht + b * H3 + ch.n;
          // Two loops, not one with the branch inside: GCC leaves that one scalar.
          if (reset_after) {
#pragma omp simd
            for (int u = 0; u < w; ++u) {
              const T g = dhb[u];
              const T dn = g * (T(1) - zz[u]) * (T(1) - nn[u] * nn[u]);  // d(n pre-activation)
              const T dz = g * (hpb[u] - nn[u]) * zz[u] * (T(1) - zz[u]);
              const T dr = dn * ab[u] * rr[u] * (T(1) - rr[u]);  // ab = W_hn h + b_hn
              dhb[u] = g * zz[u];                                // the direct path h_{t-1} -> h_t
              din[u] = dn, diz[u] = dz, dir[u] = dr;
              dhr[u] = dr, dhz[u] = dz, dhn[u] = dn * rr[u];
            }
          } else {
#pragma omp simd
            for (int u = 0; u < w; ++u) {
              const T g = dhb[u];
              const T dn = g * (T(1) - zz[u]) * (T(1) - nn[u] * nn[u]);
              const T dz = g * (hpb[u] - nn[u]) * zz[u] * (T(1) - zz[u]);
              dhb[u] = g * zz[u];
              din[u] = dn, diz[u] = dz;
              dhz[u] = dz, dhn[u] = dn;
            }
          }
        }
      });
#pragma omp barrier
      if (!reset_after) {
        // d(r ⊙ h) = d(n_pre) W_hn needs every unit's d(n_pre); then r's gradient and the
        // path through r ⊙ h.
        rec_n.run(drh, H, dht + 2 * static_cast<idx>(H), G * H, B, false);
        for_blocks(k0, k1, g3, g2, false, [&](int u0, auto w, BlockCols ci, BlockCols ch) {
          for (int b = 0; b < B; ++b) {
            const idx o = b * static_cast<idx>(H) + u0;
            const T *rr = gt + b * H3 + ci.r, *hpb = hp + o, *drb = drh + o;
            T *dhb = dh + o, *dir = dit + b * H3 + ci.r, *dhr = dht + b * H3 + ch.r;
#pragma omp simd
            for (int u = 0; u < w; ++u) {
              const T dr = drb[u] * hpb[u] * rr[u] * (T(1) - rr[u]);
              dhb[u] += drb[u] * rr[u];
              dir[u] = dr, dhr[u] = dr;
            }
          }
        });
#pragma omp barrier
      }
      // dh_{t-1}[:, j0:j1] += d(recurrent pre-activations) W_hh[:, j0:j1]: needs every column.
      rec.run(dh, H, dht, G * H, B, true);
    }
    for (int b = 0; b < B; ++b)
      for (int j = j0; j < j1; ++j)
        dh0[b * static_cast<idx>(H) + j] = dh[b * static_cast<idx>(H) + j];
    // Whole-sequence weight gradients of this thread's units, blocked into the scratch, then
    // put back in PyTorch's row order.
    if (j1 > j0) {
      T *s_ih = dw_scratch, *s_hh = s_ih + H3 * D, *s_bi = s_hh + H3 * H, *s_bh = s_bi + H3;
      input_weight_grad<T>(s_ih, dgi, G * H, x, ids, TB, D, G * H, G * j0, G * j1, dx);
      col_sums<T>(s_bi, dgi, TB, H3, G * j0, G * j1);
      unblock_gate_rows<T>(dw_ih, s_ih, g3, D, j0, j1);
      unblock_gate_rows<T>(db_ih, s_bi, g3, 1, j0, j1);
      if (reset_after) {
        gemm_rows<T>(G * j0, G * j1, true, false, H, TB, dgh, G * H, h_states, H, T(0), s_hh, H);
        col_sums<T>(s_bh, dgh, TB, H3, G * j0, G * j1);
        unblock_gate_rows<T>(dw_hh, s_hh, g3, H, j0, j1);
        unblock_gate_rows<T>(db_hh, s_bh, g3, 1, j0, j1);
      } else {
        gemm_rows<T>(2 * j0, 2 * j1, true, false, H, TB, dgh, G * H, h_states, H, T(0), s_hh, H);
        col_sums<T>(s_bh, dgh, TB, H3, 2 * j0, 2 * j1);
        unblock_gate_rows<T>(dw_hh, s_hh, g2, H, j0, j1);  // rows r, z
        unblock_gate_rows<T>(db_hh, s_bh, g2, 1, j0, j1);
        const idx n0 = 2 * static_cast<idx>(H);  // rows n: plain order, straight to the output
        gemm_rows<T>(j0, j1, true, false, H, TB, dgh + n0, G * H, aux, H, T(0), dw_hh + n0 * H, H);
        col_sums<T>(db_hh + n0, dgh + n0, TB, H3, j0, j1);
      }
    }
    // dx = dgi W_ih (both blocked: the sum over gates does not care about their order).
    if (!ids) {
      const Range rows = split(TB, np, p, 1);
      gemm_rows<T>(rows.begin, rows.end, false, false, D, G * H, dgi, G * H, w_ih, D, T(0), dx, D);
    }
  }
}

#define RNNCORE_INSTANTIATE(T)                                                                    \
  template void gru_forward<T>(T *, T *, T *, T *, const T *, const std::int32_t *, const T *,    \
                               const T *, const T *, const T *, const T *, bool, int, int, int,   \
                               int);                                                              \
  template void gru_backward<T>(T *, T *, T *, T *, T *, T *, T *, T *, T *, T *, T *, const T *, \
                                const T *, const T *, const T *, const T *, const T *,            \
                                const std::int32_t *, const T *, const T *, bool, int, int, int,  \
                                int);
RNNCORE_INSTANTIATE(float)
RNNCORE_INSTANTIATE(double)
#undef RNNCORE_INSTANTIATE

}  // namespace rnncore
