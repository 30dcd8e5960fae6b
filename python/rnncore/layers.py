"""Multi-layer RNN, LSTM and GRU stacks on top of rnncore's functional kernels.

A layer object owns its parameters (PyTorch's names and layouts, so a ``torch.nn`` state_dict
loads as is), their gradients, an RNG for its default initialisation and inter-layer dropout,
and the caches of its last training forward. Python owns the stacking, the directions and the
dropout; each direction of each layer is one call of the C++ kernel over the whole sequence.
The shared implementation, and its API, is rnncore.stack.RecurrentStack; this module holds the
cells. Variable lengths and bidirectional stacks: docs/sequences.md.

Shape legend
------------
    T           sequence length
    B           batch size
    D           input_size
    H           hidden_size
    L           num_layers
    G           gates stacked in the weights: 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)
    dirs        directions per layer: 1, or 2 with bidirectional=True

    x           (T, B, D)    inputs, time-major
    lengths     (B,)         steps each sequence runs, in [0, T] (None: all T)
    y           (T, B, dirs*H)  outputs of the last layer (forward direction first)
    state       (L*dirs, B, H)  hidden state of every layer and direction (PyTorch's order:
                             layer 0 forward, layer 0 reverse, layer 1 forward, ...); LSTM: a
                             tuple (h, c) of two such arrays
    weight_ih_l0            (G*H, D)       input-to-hidden weights of layer 0
    weight_ih_l{k}, k >= 1  (G*H, dirs*H)  layer k's input is layer k-1's output
    weight_hh_l{k}          (G*H, H)
    bias_ih_l{k}, bias_hh_l{k}  (G*H,)     (absent with bias=False)
    ..._l{k}_reverse        the reverse direction's four (bidirectional=True)

Training step::

    layer.zero_grad()
    y, state = layer.forward(x, state)             # keeps the caches on the layer
    dx, dstate = layer.backward(dy)                # adds into layer.grads
    for name, p in layer.parameters().items():     # the live arrays
        p -= lr * layer.grads[name]
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from .checks import flag
from .stack import RecurrentStack

__all__ = ["GRU", "LSTM", "RNN", "RecurrentStack"]

Array = np.ndarray


class RNN(RecurrentStack[Array]):
    """Multi-layer Elman RNN, as torch.nn.RNN (time-major; one direction, or two).

        h_t = act(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh),  act = tanh or relu

    Args:
        input_size: D, features per input step.
        hidden_size: H, features of the hidden state.
        num_layers: L, layers stacked (layer k > 0 takes layer k-1's outputs as its input).
        nonlinearity: "tanh" or "relu".
        bias: whether the layers have the biases b_ih and b_hh.
        dropout: probability of zeroing each output unit of every layer but the last during
            training forwards (inverted dropout); no effect with num_layers=1.
        bidirectional: every layer runs a forward and a reverse direction (parameters
            ``..._l{k}_reverse``), y has 2H features (forward first) and the state 2L rows,
            as torch.nn with bidirectional=True.
        dtype: float32 or float64, of the parameters and of every array passed in.
        seed: seed of the layer's RNG (np.random.default_rng(seed)): the initialisation, every
            parameter drawn from U(-1/√H, 1/√H) in state_dict order, then the dropout masks.

    Inputs and outputs: see forward() and backward(); parameters: parameters(), state_dict().
    A layer keeps the caches of its last training forward, so one object must not be used by
    several threads at once.
    """

    _gates = 1
    _forward = "rnn_forward"
    _backward = "rnn_backward"
    _state_names = ("h",)
    _option_defaults: ClassVar[dict[str, Any]] = {"nonlinearity": "tanh"}
    cell = "rnn"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        nonlinearity: str = "tanh",
        bias: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: npt.DTypeLike = np.float32,
        seed: int | None = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            dropout=dropout,
            bidirectional=bidirectional,
            dtype=dtype,
            seed=seed,
            options={"nonlinearity": nonlinearity},
        )


class LSTM(RecurrentStack[tuple[Array, Array]]):
    """Multi-layer LSTM, as torch.nn.LSTM (time-major, gate order i, f, g, o).

    The state is a tuple (h, c) of two (L*dirs, B, H) arrays. Arguments as for RNN (without
    nonlinearity); parameters are (4H, ·) and (4H,).
    """

    _gates = 4
    _forward = "lstm_forward"
    _backward = "lstm_backward"
    _state_names = ("h", "c")
    cell = "lstm"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: npt.DTypeLike = np.float32,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            dropout=dropout,
            bidirectional=bidirectional,
            dtype=dtype,
            seed=seed,
            options={},
        )


class GRU(RecurrentStack[Array]):
    """Multi-layer GRU (time-major, gate order r, z, n).

    reset_after=True is torch.nn.GRU (the reset gate multiplies W_hn h + b_hn);
    reset_after=False is the GRU of Cho et al. (it multiplies h before W_hn). Other arguments
    as for RNN (without nonlinearity); parameters are (3H, ·) and (3H,).
    """

    _gates = 3
    _forward = "gru_forward"
    _backward = "gru_backward"
    _state_names = ("h",)
    _option_defaults: ClassVar[dict[str, Any]] = {"reset_after": True}
    cell = "gru"

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        reset_after: bool = True,
        bias: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        dtype: npt.DTypeLike = np.float32,
        seed: int | None = None,
    ) -> None:
        self.reset_after = flag("GRU", "reset_after", reset_after)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias=bias,
            dropout=dropout,
            bidirectional=bidirectional,
            dtype=dtype,
            seed=seed,
            options={"reset_after": self.reset_after},
        )
