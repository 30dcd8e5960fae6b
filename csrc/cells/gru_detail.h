// What the two GRU variants share inside their kernels (cells/gru_reset_after.cpp,
// cells/gru_reset_before.cpp): where a unit block's gates live, and the input side of the
// whole-sequence weight gradients.
//
// Shape legend: T steps, B batch, D input size, H hidden size, G = 3 gates (r, z, n); with
// lengths the (T,B,·) buffers hold N packed rows (common/packing.h).
//   gi, dgi (T,B,3H) input-side gates, blocked G = 3   gh, dgh (T,B,3H) in w_hh's order
#pragma once

#include "common/gates.h"
#include "common/input.h"
#include "common/sequence.h"

namespace rnncore::gru {

constexpr int G = 3;

// Where the r, z, n values of unit block k live in a row of gi (or of gh when W_hh is blocked
// G = 3, reset_after).
struct BlockCols {
  idx r, z, n;
};
inline BlockCols blocked_cols(GateBlocks g3, int k) {
  const idx b = g3.begin(k), w = g3.width(k);
  return {b, b + w, b + 2 * w};
}

// dW_ih and db_ih of this thread's units from dgi (db_ih from dbi_rows, dgi's per-row sums over
// the steps): computed in the blocked order into the scratch (s_ih (3H,D), s_bi (3H)), then put
// back in PyTorch's row order.
template <typename T>
void input_side_grads(T *dw_ih, T *db_ih, T *s_ih, T *s_bi, const T *dgi, const T *dbi_rows,
                      const T *x, const std::int32_t *ids, T *dw_onehot, SeqSizes n, int j0, int j1,
                      const WeightGradArena<T> &arena, int p, bool dw_done = false) {
  const GateBlocks g3{n.H, G};
  const idx H3 = static_cast<idx>(G) * n.H;
  if (!dw_done)  // else summed by the row groups already
    input_weight_grad<T>(s_ih, dgi, G * n.H, x, ids, n.N(), n.D, G * n.H, G * j0, G * j1, dw_onehot,
                         arena, p);
  col_sums<T>(s_bi, dbi_rows, n.B, H3, G * j0, G * j1);
  unblock_gate_rows<T>(dw_ih, s_ih, g3, n.D, j0, j1);
  unblock_gate_rows<T>(db_ih, s_bi, g3, 1, j0, j1);
}

}  // namespace rnncore::gru
