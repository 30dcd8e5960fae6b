// The GRU's weight layout, shared by both variants (the kernels: gru_reset_after.cpp and
// gru_reset_before.cpp). Shape legend: H hidden size, D input size; w_hh (3H,H), biases (3H).
#include "cells/gru.h"

#include "common/gates.h"
#include "common/input.h"

namespace rnncore {

namespace {

// Row of PyTorch's W_hh row g*H + j (gate g of unit j) in the variant's layout (gru.h).
inline idx recurrent_row(int g, int j, int H, bool reset_after) {
  if (reset_after) return GateBlocks{H, 3}.row(g, j);
  if (g < 2) return GateBlocks{H, 2}.row(g, j);
  return 2 * static_cast<idx>(H) + j;  // n rows: plain order
}

}  // namespace

template <typename T>
void GruWorkspace<T>::prepare(const SeqInputs<T> &in, SeqSizes n, bool reset_after) const {
  const GateBlocks g3{n.H, 3};
  keep_inputs(seq, in, n);
  layout_input_weights<T>(seq.w_ih, in.w_ih, g3, n.D, in.ids != nullptr);
  // Biases stay separate: b_hn sits inside r ⊙ (...) when reset_after.
  for (int g = 0; g < 3; ++g)
    for (int j = 0; j < n.H; ++j) {
      const idx i = static_cast<idx>(g) * n.H + j, r = recurrent_row(g, j, n.H, reset_after);
      b_ih[g3.row(g, j)] = in.b_ih ? in.b_ih[i] : T(0);
      b_hh[r] = in.b_hh ? in.b_hh[i] : T(0);
      std::memcpy(seq.w_hh + r * n.H, in.w_hh + i * n.H, static_cast<std::size_t>(n.H) * sizeof(T));
    }
}

template struct GruWorkspace<float>;
template struct GruWorkspace<double>;

}  // namespace rnncore
