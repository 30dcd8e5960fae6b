// Vanilla RNN over a whole sequence (PyTorch nn.RNN equation and layout):
//   h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),  act = tanh or relu.
#pragma once

#include <cstdint>

namespace rnncore {

enum class Activation { Tanh, Relu };

// Forward. hs[t] = h_{t+1}; h_{t-1} of step 0 is h0. For training, pass hs = states + B*H with
// states[0] = h0 so that states (T+1,B,H) is what rnn_backward reads.
// One-hot input (ids not null): x is unused, ids (T,B) holds token ids in [0, D) and w_ih is
// given transposed, (D,H) (common/input.h); backward then uses dx as (D,H) scratch, not output.
template <typename T>
void rnn_forward(T *hs,                    // (T,B,H) out
                 const T *x,               // (T,B,D), or nullptr
                 const std::int32_t *ids,  // (T,B), or nullptr
                 const T *h0,              // (B,H)
                 const T *w_ih,            // (H,D)
                 const T *w_hh,            // (H,H)
                 const T *bias,            // (H) b_ih + b_hh (zeros when there are none)
                 Activation act, int T_, int B, int D, int H);

// Backward (BPTT). Writes (does not accumulate) every gradient; db is d(b_ih) = d(b_hh).
template <typename T>
void rnn_backward(T *dx,                    // (T,B,D) out
                  T *dh0,                   // (B,H) out
                  T *dw_ih,                 // (H,D) out
                  T *dw_hh,                 // (H,H) out
                  T *db,                    // (H) out, or nullptr
                  T *dpre,                  // (T,B,H) scratch: gradient of the pre-activations
                  const T *dy,              // (T,B,H) or nullptr (zero)
                  const T *dh_n,            // (B,H) or nullptr (zero)
                  const T *states,          // (T+1,B,H) h_0 .. h_T from the forward
                  const T *x,               // (T,B,D), or nullptr
                  const std::int32_t *ids,  // (T,B), or nullptr
                  const T *w_ih,            // (H,D), or (D,H) for one-hot input
                  const T *w_hh,            // (H,H)
                  Activation act, int T_, int B, int D, int H);

}  // namespace rnncore
