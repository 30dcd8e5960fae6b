// Vanilla RNN over a whole sequence (PyTorch nn.RNN equation and layout):
//   h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T + b_hh),  act = tanh or relu.
//
// The cell's contract: its argument structs, the workspace a training forward keeps for the
// backward and the backward's scratch (named buffers of one block each, common/workspace.h),
// and the weight layout (plain rows; W_ih transposed for one-hot input, common/input.h).
// Shape legend: T steps, B batch, D input size, H hidden size.
#pragma once

#include <cstdint>

#include "common/sequence.h"

namespace rnncore {

enum class Activation { Tanh, Relu };

template <typename T>
struct RnnForwardArgs {
  T *hs;                    // (T,B,H) out: h_1 .. h_T
  const T *x;               // (T,B,D), or nullptr for one-hot input
  const std::int32_t *ids;  // (T,B) token ids in [0, D), or nullptr
  const T *h0;              // (B,H)
  const T *w_ih;            // (H,D); one-hot input: (D,H), its transpose
  const T *w_hh;            // (H,H)
  const T *bias;            // (H) b_ih + b_hh (zeros when there are none)
  Activation act;
  SeqSizes n;
};

// What a training forward keeps for the backward.
template <typename T>
struct RnnWorkspace {
  SeqBuffers<T> seq;  // x or ids, w_ih, w_hh, h_states (T+1,B,H)
  T *bias;            // (H) b_ih + b_hh

  static RnnWorkspace carve(Carver &c, SeqSizes n, bool one_hot) {
    return {SeqBuffers<T>::carve(c, n, 1, one_hot), c.take<T>(static_cast<std::size_t>(n.H))};
  }
  // The call's arguments into the workspace, in the kernel's layout (once per call).
  void prepare(const SeqInputs<T> &in, SeqSizes n) const;
  RnnForwardArgs<T> forward_args(Activation act, SeqSizes n) const {
    return {seq.h_states + n.BH(), seq.x, seq.ids, seq.h_states, seq.w_ih, seq.w_hh, bias, act, n};
  }
};

// Inference on dense input reads the arguments as they are: only the bias sum and, without h0,
// the zero state are made.
template <typename T>
struct RnnInferenceBuffers {
  T *bias;  // (H) b_ih + b_hh
  T *h0;    // (B,H) zeros, or nullptr when the call has an h0

  static RnnInferenceBuffers carve(Carver &c, SeqSizes n, bool zero_h0) {
    T *bias = c.take<T>(static_cast<std::size_t>(n.H));
    return {bias, zero_h0 ? c.take<T>(static_cast<std::size_t>(n.BH())) : nullptr};
  }
  void prepare(const SeqInputs<T> &in, SeqSizes n) const;
};

template <typename T>
struct RnnGrads {  // written, not accumulated
  T *dx;           // (T,B,D), or nullptr for one-hot input
  T *dh0;          // (B,H)
  T *dw_ih;        // (H,D)
  T *dw_hh;        // (H,H)
  T *db;           // (H) d(b_ih) = d(b_hh), or nullptr
};

template <typename T>
struct RnnScratch {
  T *dpre;       // (T,B,H) gradient of the pre-activations
  T *dw_onehot;  // (D,H) one-hot input's dW_ih accumulator, else nullptr
  T *h_prev;     // (T,B,H) with lengths: h_{t-1} of the packed rows (prev_states), else nullptr
  T *db_rows;    // (B,H) each batch row's sum of dpre over its steps (the bias gradient's)

  static RnnScratch carve(Carver &c, SeqSizes n, bool one_hot) {
    const std::size_t TBH = static_cast<std::size_t>(n.TB()) * n.H;
    T *dpre = c.take<T>(TBH);
    T *dw_onehot = one_hot ? c.take<T>(static_cast<std::size_t>(n.D) * n.H) : nullptr;
    T *h_prev = n.order ? c.take<T>(TBH) : nullptr;
    return {dpre, dw_onehot, h_prev, c.take<T>(static_cast<std::size_t>(n.BH()))};
  }
};

template <typename T>
struct RnnBackwardArgs {
  RnnGrads<T> out;
  const T *dy;          // (T,B,H) or nullptr (zero)
  const T *dh_n;        // (B,H) or nullptr (zero)
  RnnWorkspace<T> fwd;  // from the forward, read only
  RnnScratch<T> scratch;
  Activation act;
  SeqSizes n;
};

template <typename T>
void rnn_forward(const RnnForwardArgs<T> &a);
template <typename T>
void rnn_backward(const RnnBackwardArgs<T> &a);

}  // namespace rnncore
