// LSTM over a whole sequence (PyTorch nn.LSTM equations, gate order i, f, g, o):
//   i = σ(W_ii x + b_ii + W_hi h + b_hi)    f = σ(...)    g = tanh(...)    o = σ(...)
//   c_t = f ⊙ c_{t-1} + i ⊙ g               h_t = o ⊙ tanh(c_t)
//
// The cell's contract: argument structs, the workspace a forward keeps for the backward and the
// backward's scratch (named buffers of one block each, common/workspace.h), and the weight
// layout: W_ih, W_hh, the bias and the gate workspace gate-blocked (common/gates.h), G = 4.
// Shape legend: T steps, B batch, D input size, H hidden size.
#pragma once

#include <cstdint>

#include "common/sequence.h"
#include "common/stream.h"

namespace rnncore {

template <typename T>
struct LstmForwardArgs {
  T *hs;                    // (T,B,H) out: h_1 .. h_T
  T *cs;                    // (T,B,H) out: c_1 .. c_T
  T *gates;                 // (T,B,4H) out: activated gates i, f, g, o (blocked)
  const T *x;               // (T,B,D), or nullptr for one-hot input
  const std::int32_t *ids;  // (T,B) token ids in [0, D), or nullptr (common/input.h)
  const T *h0, *c0;         // (B,H)
  const T *w_ih;            // (4H,D) blocked; one-hot input: (D,4H), its transpose
  const T *w_hh;            // (4H,H) blocked
  const T *bias;            // (4H) blocked b_ih + b_hh (zeros when there are none)
  SeqSizes n;
  // The wavefront schedule (common/stream.h; full length, dense x only): x rows come from
  // stream_in as they are published, and h_t ⊙ mask goes to stream_out after each step.
  const StepStream *stream_in = nullptr;
  StepStream *stream_out = nullptr;
};

// What the forward keeps for the backward (inference uses it too, for this call only).
template <typename T>
struct LstmWorkspace {
  SeqBuffers<T> seq;  // x or ids, w_ih, w_hh (blocked), h_states (T+1,B,H)
  T *c_states;        // (T+1,B,H) c_0 .. c_T, slot 0 = c0
  T *gates;           // (T,B,4H) activated gates (blocked)
  T *bias;            // (4H) blocked b_ih + b_hh

  static LstmWorkspace carve(Carver &c, SeqSizes n, bool one_hot) {
    const std::size_t TB = static_cast<std::size_t>(n.TB()), H4 = 4 * static_cast<std::size_t>(n.H);
    SeqBuffers<T> seq = SeqBuffers<T>::carve(c, n, 4, one_hot);
    T *c_states = c.take<T>((TB + n.B) * n.H);
    T *gates = c.take<T>(TB * H4);
    return {seq, c_states, gates, c.take<T>(H4)};
  }
  // The call's arguments into the workspace, in the kernel's layout (once per call).
  void prepare(const SeqInputs<T> &in, SeqSizes n) const;
  LstmForwardArgs<T> forward_args(SeqSizes n) const {
    const idx BH = n.BH();
    return {seq.h_states + BH, c_states + BH, gates,    seq.x, seq.ids, seq.h_states,
            c_states,          seq.w_ih,      seq.w_hh, bias,  n};
  }
  // y (T,B,H), h_n and c_n (B,H) from the states.
  void read_outputs(T *y, T *h_n, T *c_n, SeqSizes n) const;
};

template <typename T>
struct LstmGrads {  // written, not accumulated; weight gradients in PyTorch's row order
  T *dx;            // (T,B,D), or nullptr for one-hot input
  T *dh0;           // (B,H)
  T *dc0;           // (B,H)
  T *dw_ih;         // (4H,D)
  T *dw_hh;         // (4H,H)
  T *db;            // (4H) d(b_ih) = d(b_hh)
};

template <typename T>
struct LstmScratch {
  T *dgates;     // (T,B,4H) gradient of the gate pre-activations (blocked)
  T *dw;         // (4H*(D+H+1)) blocked dW_ih, dW_hh, db before they are put in PyTorch's order
  T *dh;         // (B,H) the incoming dh of a step
  T *dw_onehot;  // (D,4H) one-hot input's dW_ih accumulator, else nullptr
  T *h_prev;     // (T,B,H) with lengths: h_{t-1} of the packed rows (prev_states), else nullptr
  T *db_rows;    // (B,4H) each batch row's sum of dgates over its steps (the bias gradient's)

  static LstmScratch carve(Carver &c, SeqSizes n, bool one_hot) {
    const std::size_t H4 = 4 * static_cast<std::size_t>(n.H);
    T *dgates = c.take<T>(static_cast<std::size_t>(n.TB()) * H4);
    T *dw = c.take<T>(H4 * (n.D + n.H + 1));
    T *dh = c.take<T>(static_cast<std::size_t>(n.BH()));
    T *dw_onehot = one_hot ? c.take<T>(H4 * n.D) : nullptr;
    T *h_prev = n.order ? c.take<T>(static_cast<std::size_t>(n.TB()) * n.H) : nullptr;
    return {dgates, dw, dh, dw_onehot, h_prev, c.take<T>(static_cast<std::size_t>(n.B) * H4)};
  }
};

template <typename T>
struct LstmBackwardArgs {
  LstmGrads<T> out;
  const T *dy;           // (T,B,H) or nullptr (zero)
  const T *dh_n, *dc_n;  // (B,H) or nullptr (zero)
  LstmWorkspace<T> fwd;  // from the forward, read only
  LstmScratch<T> scratch;
  SeqSizes n;
  // The wavefront schedule: dy rows come from stream_in (the layer above's dx ⊙ mask) as they
  // are published; dx ⊙ mask goes to stream_out step by step (from the last step down) instead
  // of into out.dx.
  const StepStream *stream_in = nullptr;
  StepStream *stream_out = nullptr;
};

template <typename T>
void lstm_forward(const LstmForwardArgs<T> &a);
template <typename T>
void lstm_backward(const LstmBackwardArgs<T> &a);

}  // namespace rnncore
