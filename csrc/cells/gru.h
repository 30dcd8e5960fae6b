// GRU over a whole sequence (PyTorch nn.GRU gate order r, z, n; h' = (1 - z) ⊙ n + z ⊙ h):
//   r = σ(W_ir x + b_ir + W_hr h + b_hr)      z = σ(W_iz x + b_iz + W_hz h + b_hz)
//   reset_after = true  (PyTorch):            n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
//   reset_after = false (Cho et al., char-rnn): n = tanh(W_in x + b_in + W_hn (r ⊙ h) + b_hn)
//
// Layouts (common/gates.h): W_ih, b_ih and the gate workspace are gate-blocked with G = 3.
// W_hh, b_hh: reset_after -> blocked with G = 3 (one recurrent GEMM per step); otherwise the
// r, z rows blocked with G = 2 followed by the n rows in plain order, because W_hn multiplies
// r ⊙ h, which exists only after r: two GEMMs and two barriers per step.
#pragma once

#include <cstdint>

namespace rnncore {

// Forward. hs[t] = h_{t+1}; step 0 reads h0. For training pass hs = h_states + B*H with
// h_states[0] = h0.
template <typename T>
void gru_forward(T *hs,       // (T,B,H) out
                 T *gates,    // (T,B,3H) out: activated r, z, n (blocked)
                 T *aux,      // (T,B,H) out: W_hn h + b_hn (reset_after) or r ⊙ h (not)
                 T *gh,       // (B,3H) scratch: one step's recurrent product
                 const T *x,  // (T,B,D), or nullptr
                 const std::int32_t *ids,  // (T,B) one-hot input (common/input.h), or nullptr
                 const T *h0,              // (B,H)
                 const T *w_ih,            // (3H,D) blocked; one-hot input: (D,3H), its transpose
                 const T *w_hh,            // (3H,H) blocked as described above
                 const T *b_ih,            // (3H) blocked (zeros when absent)
                 const T *b_hh,            // (3H) in w_hh's row order (zeros when absent)
                 bool reset_after, int T_, int B, int D, int H);

// Backward (BPTT). Writes every gradient; weight and bias gradients come out in PyTorch's
// row order.
template <typename T>
void gru_backward(T *dx,              // (T,B,D) out; one-hot input: (D,3H) scratch
                  T *dh0,             // (B,H) out
                  T *dw_ih,           // (3H,D) out
                  T *dw_hh,           // (3H,H) out
                  T *db_ih,           // (3H) out
                  T *db_hh,           // (3H) out
                  T *dgi,             // (T,B,3H) scratch: d(input pre-activations), blocked
                  T *dgh,             // (T,B,3H) scratch: d(recurrent pre-activations), w_hh order
                  T *dw_scratch,      // (3H*(D+H+2)) scratch
                  T *dh,              // (B,H) scratch
                  T *drh,             // (B,H) scratch (reset_after = false)
                  const T *dy,        // (T,B,H) or nullptr
                  const T *dh_n,      // (B,H) or nullptr
                  const T *h_states,  // (T+1,B,H)
                  const T *gates,     // (T,B,3H) from the forward
                  const T *aux,       // (T,B,H) from the forward
                  const T *x,         // (T,B,D), or nullptr
                  const std::int32_t *ids,  // (T,B), or nullptr
                  const T *w_ih,            // (3H,D) blocked, or (D,3H) for one-hot input
                  const T *w_hh,            // (3H,H) as in the forward
                  bool reset_after, int T_, int B, int D, int H);

}  // namespace rnncore
