// LSTM over a whole sequence (PyTorch nn.LSTM equations, gate order i, f, g, o):
//   i = σ(W_ii x + b_ii + W_hi h + b_hi)    f = σ(...)    g = tanh(...)    o = σ(...)
//   c_t = f ⊙ c_{t-1} + i ⊙ g               h_t = o ⊙ tanh(c_t)
// Weights, biases and the gate workspace are gate-blocked (common/gates.h), G = 4.
#pragma once

#include <cstdint>

namespace rnncore {

// Forward. hs[t] = h_{t+1}, cs[t] = c_{t+1}; step 0 reads h0, c0. For training pass
// hs = h_states + B*H, cs = c_states + B*H with slot 0 of each holding h0, c0.
template <typename T>
void lstm_forward(T *hs,                    // (T,B,H) out
                  T *cs,                    // (T,B,H) out
                  T *gates,                 // (T,B,4H) out: activated gates i, f, g, o (blocked)
                  const T *x,               // (T,B,D), or nullptr
                  const std::int32_t *ids,  // (T,B) one-hot input (common/input.h), or nullptr
                  const T *h0,              // (B,H)
                  const T *c0,              // (B,H)
                  const T *w_ih,            // (4H,D) blocked; one-hot input: (D,4H), its transpose
                  const T *w_hh,            // (4H,H) blocked
                  const T *bias,            // (4H) blocked b_ih + b_hh (zeros when there are none)
                  int T_, int B, int D, int H);

// Backward (BPTT). Writes every gradient; weight gradients come out in PyTorch's row order.
template <typename T>
void lstm_backward(T *dx,                    // (T,B,D) out
                   T *dh0,                   // (B,H) out
                   T *dc0,                   // (B,H) out
                   T *dw_ih,                 // (4H,D) out, PyTorch order
                   T *dw_hh,                 // (4H,H) out, PyTorch order
                   T *db,                    // (4H) out, PyTorch order: d(b_ih) = d(b_hh)
                   T *dgates,                // (T,B,4H) scratch
                   T *dw_scratch,            // (4H*(D+H+1)) scratch
                   T *dh,                    // (B,H) scratch
                   const T *dy,              // (T,B,H) or nullptr
                   const T *dh_n,            // (B,H) or nullptr
                   const T *dc_n,            // (B,H) or nullptr
                   const T *h_states,        // (T+1,B,H) h_0 .. h_T
                   const T *c_states,        // (T+1,B,H) c_0 .. c_T
                   const T *gates,           // (T,B,4H) from the forward
                   const T *x,               // (T,B,D), or nullptr
                   const std::int32_t *ids,  // (T,B), or nullptr
                   const T *w_ih,            // (4H,D) blocked, or (D,4H) for one-hot input
                   const T *w_hh,            // (4H,H) blocked
                   int T_, int B, int D, int H);

}  // namespace rnncore
