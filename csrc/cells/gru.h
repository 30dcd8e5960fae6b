// GRU over a whole sequence (PyTorch nn.GRU gate order r, z, n; h' = (1 - z) ⊙ n + z ⊙ h):
//   r = σ(W_ir x + b_ir + W_hr h + b_hr)      z = σ(W_iz x + b_iz + W_hz h + b_hz)
//   reset_after = true  (PyTorch):            n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
//   reset_after = false (Cho et al., char-rnn): n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
// The two variants are separate code paths: cells/gru_reset_after.cpp, gru_reset_before.cpp.
//
// Layouts (common/gates.h): W_ih, b_ih and the gate workspace are gate-blocked with G = 3.
// W_hh, b_hh: reset_after -> blocked with G = 3 (one recurrent GEMM per step); otherwise the
// r, z rows blocked with G = 2 followed by the n rows in plain order, because W_hn multiplies
// r ⊙ h, which exists only after r: two GEMMs and two barriers per step.
// Shape legend: T steps, B batch, D input size, H hidden size.
#pragma once

#include <cstdint>

#include "common/sequence.h"

namespace rnncore {

template <typename T>
struct GruForwardArgs {
  T *hs;                    // (T,B,H) out: h_1 .. h_T
  T *gates;                 // (T,B,3H) out: activated r, z, n (blocked)
  T *aux;                   // (T,B,H) out: W_hn h + b_hn (reset_after) or r ⊙ h (not)
  T *gh;                    // (B,3H) scratch: one step's recurrent product, in w_hh's order
  const T *x;               // (T,B,D), or nullptr for one-hot input
  const std::int32_t *ids;  // (T,B) token ids in [0, D), or nullptr (common/input.h)
  const T *h0;              // (B,H)
  const T *w_ih;            // (3H,D) blocked; one-hot input: (D,3H), its transpose
  const T *w_hh;            // (3H,H) in the variant's layout (above)
  const T *b_ih;            // (3H) blocked (zeros when absent)
  const T *b_hh;            // (3H) in w_hh's row order (zeros when absent)
  SeqSizes n;
};

// What the forward keeps for the backward (inference uses it too, for this call only).
template <typename T>
struct GruWorkspace {
  SeqBuffers<T> seq;  // x or ids, w_ih (blocked), w_hh (the variant's layout), h_states
  T *gates;           // (T,B,3H) activated r, z, n (blocked)
  T *aux;             // (T,B,H) see GruForwardArgs
  T *gh;              // (B,3H) the forward's per-step scratch
  T *b_ih, *b_hh;     // (3H) in w_ih's and w_hh's row order

  static GruWorkspace carve(Carver &c, SeqSizes n, bool one_hot) {
    const std::size_t TB = static_cast<std::size_t>(n.TB()), H3 = 3 * static_cast<std::size_t>(n.H);
    SeqBuffers<T> seq = SeqBuffers<T>::carve(c, n, 3, one_hot);
    T *gates = c.take<T>(TB * H3);
    T *aux = c.take<T>(TB * n.H);
    T *gh = c.take<T>(static_cast<std::size_t>(n.B) * H3);
    T *b_ih = c.take<T>(H3);
    return {seq, gates, aux, gh, b_ih, c.take<T>(H3)};
  }
  // The call's arguments into the workspace, in the variant's layout (once per call).
  void prepare(const SeqInputs<T> &in, SeqSizes n, bool reset_after) const;
  GruForwardArgs<T> forward_args(SeqSizes n) const {
    return {seq.h_states + n.BH(), gates,    aux,      gh,   seq.x, seq.ids,
            seq.h_states,          seq.w_ih, seq.w_hh, b_ih, b_hh,  n};
  }
};

template <typename T>
struct GruGrads {    // written, not accumulated; weight and bias gradients in PyTorch's row order
  T *dx;             // (T,B,D), or nullptr for one-hot input
  T *dh0;            // (B,H)
  T *dw_ih;          // (3H,D)
  T *dw_hh;          // (3H,H)
  T *db_ih, *db_hh;  // (3H)
};

template <typename T>
struct GruScratch {
  T *dgi;        // (T,B,3H) d(input-side pre-activations), blocked
  T *dgh;        // (T,B,3H) d(recurrent-side pre-activations), in w_hh's order
  T *dw;         // (3H*(D+H+2)) blocked dW_ih, dW_hh, db_ih, db_hh before PyTorch's order
  T *dh;         // (B,H) the running dh
  T *drh;        // (B,H) d(r ⊙ h) (reset_after = false)
  T *dw_onehot;  // (D,3H) one-hot input's dW_ih accumulator, else nullptr
  T *h_prev;     // (T,B,H) with lengths: h_{t-1} of the packed rows (prev_states), else nullptr
  T *dbi_rows;   // (B,3H) each batch row's sum of dgi over its steps (db_ih's), dgi's layout
  T *dbh_rows;   // (B,3H) the same for dgh (db_hh's), dgh's layout

  static GruScratch carve(Carver &c, SeqSizes n, bool one_hot) {
    const std::size_t H3 = 3 * static_cast<std::size_t>(n.H), BH = static_cast<std::size_t>(n.BH());
    T *dgi = c.take<T>(static_cast<std::size_t>(n.TB()) * H3);
    T *dgh = c.take<T>(static_cast<std::size_t>(n.TB()) * H3);
    T *dw = c.take<T>(H3 * (n.D + n.H + 2));
    T *dh = c.take<T>(BH);
    T *drh = c.take<T>(BH);
    T *dw_onehot = one_hot ? c.take<T>(H3 * n.D) : nullptr;
    T *h_prev = n.order ? c.take<T>(static_cast<std::size_t>(n.TB()) * n.H) : nullptr;
    T *dbi_rows = c.take<T>(static_cast<std::size_t>(n.B) * H3);
    return {dgi,    dgh,      dw,
            dh,     drh,      dw_onehot,
            h_prev, dbi_rows, c.take<T>(static_cast<std::size_t>(n.B) * H3)};
  }
};

template <typename T>
struct GruBackwardArgs {
  GruGrads<T> out;
  const T *dy;          // (T,B,H) or nullptr (zero)
  const T *dh_n;        // (B,H) or nullptr (zero)
  GruWorkspace<T> fwd;  // from the forward, read only
  GruScratch<T> scratch;
  SeqSizes n;
};

template <typename T>
void gru_reset_after_forward(const GruForwardArgs<T> &a);
template <typename T>
void gru_reset_after_backward(const GruBackwardArgs<T> &a);
template <typename T>
void gru_reset_before_forward(const GruForwardArgs<T> &a);
template <typename T>
void gru_reset_before_backward(const GruBackwardArgs<T> &a);

template <typename T>
void gru_forward(const GruForwardArgs<T> &a, bool reset_after) {
  reset_after ? gru_reset_after_forward(a) : gru_reset_before_forward(a);
}
template <typename T>
void gru_backward(const GruBackwardArgs<T> &a, bool reset_after) {
  reset_after ? gru_reset_after_backward(a) : gru_reset_before_backward(a);
}

}  // namespace rnncore
