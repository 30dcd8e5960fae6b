"""NumPy reference implementation of vanilla RNN, LSTM and GRU over a whole sequence.

This package is the test oracle and the benchmark baseline of the C++ kernels of rnncore. It is
written to be read and checked by eye, not to be fast: every cell is a plain loop over time (in
the style of min-char-rnn) with one batched matrix product per weight matrix and step.

Conventions are PyTorch's nn.RNN / nn.LSTM / nn.GRU (one layer, one direction, batch_first=False):
same equations, same weight layout, same gate order.

Shape legend
------------
    T           sequence length (number of time steps)
    B           batch size
    D           input size
    H           hidden size
    G           gates stacked in the weights: 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)

    x           (T, B, D)    inputs, time-major
    h0, c0      (B, H)       initial hidden / cell state (None means zeros)
    y           (T, B, H)    y[t] is the hidden state after step t
    h_n, c_n    (B, H)       final hidden / cell state (h_n equals y[T-1] when T > 0)
    w_ih        (G*H, D)     input-to-hidden weights, gate blocks stacked by rows
    w_hh        (G*H, H)     hidden-to-hidden weights, gate blocks stacked by rows
    b_ih, b_hh  (G*H,)       biases (None means no bias)

Every gradient has the shape of the array it is the gradient of (dx: (T, B, D), dw_ih: (G*H, D),
...). The backward functions take dy = dL/dy and dh_n = dL/dh_n (and dc_n = dL/dc_n) for some
scalar loss L; dh_n is the gradient flowing into h_n as an output of its own and is added to
dy[T-1]. Any of them may be None, meaning zeros.

Time indexing inside the loops: hs[t] is the hidden state entering step t (hs[0] = h0) and
hs[t + 1] the one leaving it; likewise cs for the LSTM cell state.

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
