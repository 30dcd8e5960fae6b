"""NumPy reference implementation of vanilla RNN, LSTM and GRU over a whole sequence.

This package is the test oracle and the benchmark baseline of the C++ kernels of rnncore. It is
written to be read and checked by eye, not to be fast: every cell is a plain loop over time (in
the style of min-char-rnn) with one batched matrix product per weight matrix and step.

Conventions are PyTorch's nn.RNN / nn.LSTM / nn.GRU (one layer, one direction, batch_first=False):
same equations, same weight layout, same gate order. Variable lengths and the reverse direction
are PyTorch's packed sequences padded back with zeros (and ONNX's sequence_lens), see below.

Shape legend
------------
    T           sequence length (number of time steps)
    B           batch size
    D           input size
    H           hidden size
    G           gates stacked in the weights: 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)

    x           (T, B, D)    inputs, time-major
    lengths     (B,)         integer steps per element, values in [0, T], any order
                             (None means every length is T)
    h0, c0      (B, H)       initial hidden / cell state (None means zeros)
    y           (T, B, H)    y[t] is the hidden state after reading x[t]; 0 past each length
    h_n, c_n    (B, H)       final hidden / cell state (h_n equals y[T-1] when T > 0, lengths
                             is None and reverse is False)
    w_ih        (G*H, D)     input-to-hidden weights, gate blocks stacked by rows
    w_hh        (G*H, H)     hidden-to-hidden weights, gate blocks stacked by rows
    b_ih, b_hh  (G*H,)       biases (None means no bias)

Every gradient has the shape of the array it is the gradient of (dx: (T, B, D), dw_ih: (G*H, D),
...). The backward functions take dy = dL/dy and dh_n = dL/dh_n (and dc_n = dL/dc_n) for some
scalar loss L; dh_n is the gradient flowing into h_n as an output of its own and is added to
dy[T-1]. Any of them may be None, meaning zeros.

Lengths and direction (keyword-only forward arguments `lengths=None, reverse=False`; backward
takes them from the cache):

- element b runs steps 0 .. lengths[b]-1; y[t, b] = 0 for t >= lengths[b]; h_n[b] (and c_n[b])
  is the state after its own last step, and h0[b] (c0[b]) itself when lengths[b] = 0 (our
  choice: PyTorch rejects length 0, ONNX Runtime returns zeros);
- nothing in x past a length is read (it may hold NaN); backward ignores dy there, returns
  dx = 0 there, and lets gradients flow only through the steps that ran (dh_n and dc_n enter
  at each sequence's own last step);
- reverse=True reads x[lengths[b]-1, b], ..., x[0, b] and writes each output at the position it
  read, as the reverse direction of a bidirectional PyTorch layer; h_n is the state after
  reading x[0]. With lengths None it equals the forward direction on x[::-1] with y flipped;
- lengths all equal to T gives results bitwise equal to lengths=None; permuting the batch rows
  (with their lengths) permutes y, h_n, c_n, dx, dh0, dc0 up to the BLAS's rounding only
  (OpenBLAS's row results can depend on a row's position in the product; the kernels
  permute bitwise), exactly for rows of length 0;
- lengths must have shape (B,) and an integer dtype (not bool) with values in [0, T], and
  reverse must be a bool: otherwise ValueError / TypeError naming the argument.
Internally each step runs on the whole batch and rows past their length keep their state
(a per-step mask): readable, not proportional to the steps that run as the kernels are.

Time indexing inside the loops: hs[t] is the hidden state entering step t (hs[0] = h0) and
hs[t + 1] the one leaving it; likewise cs for the LSTM cell state. With reverse=True the loops
run over the reading order: x is first flipped within each length (flip_within_lengths in
common.py), and y is flipped back at the end.

All arithmetic is done in the dtype of w_ih (float32 or float64); the other inputs are cast to it.
A forward with training=True returns a cache holding private copies of what its backward needs;
backward only reads the cache, so it can be called any number of times.

The code is one file per cell in rnncore.reference_cells (rnn.py, lstm.py, gru.py, and their
shared helpers in common.py); import every name from here, e.g. rnncore.reference.lstm_forward.
"""

from __future__ import annotations

from .reference_cells.gru import GRUCache, gru_backward, gru_forward
from .reference_cells.lstm import LSTMCache, lstm_backward, lstm_forward
from .reference_cells.rnn import RNNCache, rnn_backward, rnn_forward

__all__ = [
    "GRUCache",
    "LSTMCache",
    "RNNCache",
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "rnn_backward",
    "rnn_forward",
]
