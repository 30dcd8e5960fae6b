"""rnncore's kernels inside PyTorch: drop-in torch.nn.RNN / LSTM / GRU modules (docs/interop.md).

``rnncore.torch.RNN``, ``LSTM`` and ``GRU`` are ``torch.nn.Module``s with the constructor,
parameters, initialisation and state_dict of ``torch.nn.RNN`` / ``LSTM`` / ``GRU``, whose
forward and backward run rnncore's C++ kernels: each direction of each layer is one
``rnncore.<cell>_forward`` call over the whole sequence, recorded as one autograd node
(rnncore.torch_autograd.KernelDirection) whose backward is ``rnncore.<cell>_backward``. The
stacking, the inter-layer dropout (``torch.nn.functional.dropout``, so torch's RNG draws the
masks) and the concatenation of two directions are ordinary torch operations.

This module imports torch; ``import rnncore`` does not import it (``import rnncore.torch`` does).
CPU tensors of float32 or float64 only.

Shape legend (as torch.nn.LSTM's documentation)
-----------------------------------------------
    T, B        sequence length, batch size
    D, H        input_size, hidden_size
    L, dirs     num_layers; 2 directions with bidirectional=True, else 1
    G           gate blocks: 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)

    input       (T, B, D), (B, T, D) with batch_first=True, (T, D) unbatched, or a
                PackedSequence
    lengths     (B,) integers in [0, T] (a tensor, array or list), or None for all T
    hx          (L*dirs, B, H) (or (L*dirs, H) unbatched); LSTM: a tuple (h_0, c_0)
    output      (T, B, dirs*H) (batch_first: (B, T, dirs*H)), or a PackedSequence
    h_n, c_n    (L*dirs, B, H): the state after each row's last step (as torch's packed input)
    weight_ih_l{k}  (G*H, D) for k = 0, (G*H, dirs*H) above;  weight_hh_l{k}  (G*H, H)
    bias_ih_l{k}, bias_hh_l{k}  (G*H,);  ..._reverse: the reverse direction's

No copy at the torch <-> NumPy boundary: contiguous CPU tensors go to the kernels as NumPy
views of their memory and the kernels' arrays come back as tensors over theirs. What does copy:
batch_first input and output (the kernels are time-major: one transpose each way), the
concatenation of a bidirectional layer's two directions, and a PackedSequence (padded at entry
and packed again at exit, as torch's own pad_packed_sequence / pack_padded_sequence).
"""

from __future__ import annotations

import math
import warnings
from typing import Any, ClassVar

import numpy as np
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from . import _core
from .checks import flag, fraction, integer, positive_int
from .stack_inputs import check_lengths
from .torch_autograd import Spec, run_direction

__all__ = ["GRU", "LSTM", "RNN", "RNNBase"]

Tensor = torch.Tensor
_DTYPES = (torch.float32, torch.float64)


class RNNBase(torch.nn.Module):
    """What RNN, LSTM and GRU share: parameters in torch.nn's names and order, and forward.

    Not built directly: the subclasses set ``cell`` and ``gates`` and pass their options.
    """

    cell: ClassVar[str]  # "rnn", "lstm", "gru": rnncore.<cell>_forward / _backward
    gates: ClassVar[int]  # G

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        bias: bool,
        batch_first: bool,
        dropout: float,
        bidirectional: bool,
        device: Any,
        dtype: torch.dtype | None,
        options: dict[str, Any],
    ) -> None:
        super().__init__()
        # The kernels' buffers, reused from call to call (a copy of the module gets a new one).
        self._pool = _core.WorkspacePool()
        where = type(self).__name__
        self.input_size = positive_int(where, "input_size", input_size)
        self.hidden_size = positive_int(where, "hidden_size", hidden_size)
        self.num_layers = positive_int(where, "num_layers", num_layers)
        self.bias = flag(where, "bias", bias)
        self.batch_first = flag(where, "batch_first", batch_first)
        self.dropout = fraction(where, "dropout", dropout)
        self.bidirectional = flag(where, "bidirectional", bidirectional)
        self.options = dict(options)
        if self.dropout > 0 and self.num_layers == 1:
            warnings.warn(  # torch.nn's warning, word for word
                "dropout option adds dropout after all but last recurrent layer, so non-zero "
                "dropout expects num_layers greater than 1, but got "
                f"dropout={self.dropout} and num_layers={self.num_layers}",
                stacklevel=3,
            )
        dtype = torch.get_default_dtype() if dtype is None else dtype
        if dtype not in _DTYPES:
            raise TypeError(f"{where}: dtype must be torch.float32 or torch.float64, got {dtype}")
        if device is not None and torch.device(device).type != "cpu":
            raise ValueError(f"{where}: device must be the CPU (rnncore's kernels), got {device}")
        H, G, dirs = self.hidden_size, self.gates, self.num_directions
        self._flat_weights_names: list[str] = []
        for layer in range(self.num_layers):
            d_in = self.input_size if layer == 0 else dirs * H
            shapes = [("weight_ih", (G * H, d_in)), ("weight_hh", (G * H, H))]
            if self.bias:
                shapes += [("bias_ih", (G * H,)), ("bias_hh", (G * H,))]
            for suffix in self._suffixes:
                for name, shape in shapes:
                    key = f"{name}_l{layer}{suffix}"
                    self.register_parameter(
                        key, torch.nn.Parameter(torch.empty(shape, dtype=dtype))
                    )
                    self._flat_weights_names.append(key)
        self.reset_parameters()

    # --- what torch.nn.RNNBase has -------------------------------------------------------------

    @property
    def num_directions(self) -> int:
        """2 with bidirectional=True, else 1."""
        return 2 if self.bidirectional else 1

    @property
    def _suffixes(self) -> tuple[str, ...]:
        return ("", "_reverse") if self.bidirectional else ("",)

    def reset_parameters(self) -> None:
        """Every parameter from U(-1/√H, 1/√H), in registration order: torch.nn.RNNBase's rule
        and order, so that after the same torch.manual_seed both modules hold the same values."""
        stdv = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            torch.nn.init.uniform_(w, -stdv, stdv)

    @property
    def all_weights(self) -> list[list[torch.nn.Parameter]]:
        """[w_ih, w_hh, b_ih, b_hh] (without biases when bias=False) per layer and direction,
        as torch.nn.RNNBase.all_weights."""
        n = 4 if self.bias else 2
        ws = [getattr(self, k) for k in self._flat_weights_names]
        return [ws[i : i + n] for i in range(0, len(ws), n)]

    def flatten_parameters(self) -> None:
        """Nothing to do: torch.nn's method packs weights for cuDNN; the kernels read each
        parameter where it is. Kept so that code written for torch.nn runs unchanged."""

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for key, value in self.options.items():
            if value != {"nonlinearity": "tanh", "reset_after": True}[key]:
                s += f", {key}={value!r}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s

    # --- forward ------------------------------------------------------------------------------

    def forward(
        self,
        input: Tensor | PackedSequence,
        hx: Any = None,
        lengths: Any = None,
    ) -> tuple[Any, Any]:
        """Run the stack, as torch.nn's forward, optionally over a padded variable-length batch.

        Args:
            input: (T, B, D) (batch_first: (B, T, D)), (T, D) unbatched, or a PackedSequence
                (then lengths must be None: the packed sequence has its own), of the module's
                dtype, on the CPU.
            hx: initial state, None for zeros: (L*dirs, B, H) ((L*dirs, H) unbatched); the LSTM
                takes a tuple (h_0, c_0). Rows in torch's order (layer 0 forward, layer 0
                reverse, layer 1 forward, ...), never batch-first.
            lengths: (B,) integer steps each sequence of a padded batch runs, in [0, T], any
                order (not sorted); None for all T. As torch's packed sequences:
                output[t, b] = 0 for t >= lengths[b] (in both directions' halves), the padding
                is never read, h_n is the state after each row's last step, the reverse
                direction starts at step lengths[b]-1. A length 0 gives that row's hx as its
                final state (torch refuses length 0).

        Returns:
            (output, h_n) for RNN and GRU, (output, (h_n, c_n)) for the LSTM: output
            (T, B, dirs*H) ((B, T, dirs*H) batch_first; a PackedSequence for a packed input),
            h_n and c_n (L*dirs, B, H).

        Raises:
            TypeError: input, hx or lengths of the wrong type or dtype.
            ValueError: wrong shapes, lengths outside [0, T], a tensor not on the CPU, or
                lengths given with a PackedSequence.
        """
        where = f"{type(self).__name__}.forward"
        packed = isinstance(input, PackedSequence)
        if packed:
            if lengths is not None:
                raise ValueError(f"{where}: lengths must be None with a PackedSequence input")
            x, lens = pad_packed_sequence(input)  # (T, B, D) in the caller's batch order
            lengths, unbatched = lens, False
        else:
            if not isinstance(input, Tensor):
                raise TypeError(
                    f"{where}: input must be a torch.Tensor or a PackedSequence, got "
                    f"{type(input).__name__}"
                )
            if input.dim() not in (2, 3):
                raise ValueError(
                    f"{where}: input must be 3-D {'(B, T, D)' if self.batch_first else '(T, B, D)'}"
                    f" or 2-D (T, D) unbatched, got shape {tuple(input.shape)}"
                )
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else input
            if self.batch_first and not unbatched:
                x = x.transpose(0, 1)
        x = self._check_tensor(where, "input", x).contiguous()  # a copy only if batch_first
        if x.shape[2] != self.input_size:
            raise ValueError(
                f"{where}: input must have {self.input_size} features (input_size) in its last "
                f"dimension, got shape {tuple(input.data.shape if packed else input.shape)}"
            )
        T, B = x.shape[:2]
        lens = self._lengths(where, lengths, T, B, unbatched)
        h0, c0 = self._states(where, hx, B, unbatched)

        p, dirs = self.dropout, self.num_directions
        hs: list[Tensor] = []
        cs: list[Tensor] = []
        inp = x  # (T, B, D), then (T, B, dirs*H)
        for layer in range(self.num_layers):
            outs = []
            for d, suffix in enumerate(self._suffixes):
                i = layer * dirs + d  # the state's row
                spec = Spec(self.cell, self.options, reverse=d == 1, pool=self._pool)
                weights = tuple(
                    getattr(self, f"{n}_l{layer}{suffix}") if self.bias or n[0] == "w" else None
                    for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
                )
                y, h, *c = run_direction(
                    spec,
                    inp,
                    None if h0 is None else h0[i],
                    None if c0 is None else c0[i],
                    weights,  # type: ignore[arg-type]
                    lens,
                )
                outs.append(y)
                hs.append(h)
                cs.extend(c)
            y = outs[0] if dirs == 1 else torch.cat(outs, dim=2)  # (T, B, dirs*H)
            if p > 0 and self.training and layer < self.num_layers - 1:
                y = torch.nn.functional.dropout(y, p, training=True)
            inp = y
        h_n = torch.stack(hs)  # (L*dirs, B, H)
        state: Any = (h_n, torch.stack(cs)) if self.cell == "lstm" else h_n
        output: Any = inp
        if packed:
            output = self._repack(inp, input)
        elif unbatched:
            output = inp.squeeze(1)
            state = (
                tuple(s.squeeze(1) for s in state) if isinstance(state, tuple) else state.squeeze(1)
            )
        elif self.batch_first:
            output = inp.transpose(0, 1)
        return output, state

    # --- helpers ------------------------------------------------------------------------------

    def _check_tensor(self, where: str, name: str, t: Any) -> Tensor:
        """t, a CPU tensor of the module's dtype, or a TypeError / ValueError naming it."""
        dtype = self.weight_hh_l0.dtype
        if dtype not in _DTYPES:  # e.g. after module.half()
            raise TypeError(
                f"{where}: the module's parameters are {dtype}; rnncore's kernels take "
                "torch.float32 or torch.float64"
            )
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dtype != dtype:
            raise TypeError(
                f"{where}: {name} must have dtype {dtype} (the module's dtype), got {t.dtype}"
            )
        if t.device.type != "cpu":
            raise ValueError(
                f"{where}: {name} must be on the CPU (rnncore's kernels), got {t.device}"
            )
        return t

    def _lengths(
        self, where: str, lengths: Any, T: int, B: int, unbatched: bool
    ) -> np.ndarray | None:
        """lengths as a (B,) int64 NumPy array in [0, T], or None."""
        if lengths is None:
            return None
        if unbatched:
            raise ValueError(f"{where}: lengths needs a batched input, got an unbatched (T, D) one")
        if isinstance(lengths, Tensor):
            if lengths.device.type != "cpu":
                raise ValueError(f"{where}: lengths must be on the CPU, got {lengths.device}")
            lengths = lengths.detach().numpy()
        return check_lengths(where, lengths, T, B)

    def _states(
        self, where: str, hx: Any, B: int, unbatched: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        """(h_0, c_0) as (L*dirs, B, H) tensors (None: zeros); c_0 is None but for the LSTM."""
        if hx is None:
            return None, None
        is_lstm = self.cell == "lstm"
        if is_lstm:
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(
                    f"{where}: hx must be a tuple (h_0, c_0) of tensors for the LSTM, or None, "
                    f"got {type(hx).__name__}"
                )
            parts = [("hx[0] (h_0)", hx[0]), ("hx[1] (c_0)", hx[1])]
        else:
            parts = [("hx", hx)]
        rows = self.num_layers * self.num_directions
        expected = (rows, self.hidden_size) if unbatched else (rows, B, self.hidden_size)
        out: list[Tensor] = []
        for name, t in parts:
            t = self._check_tensor(where, name, t)
            if tuple(t.shape) != expected:
                raise ValueError(
                    f"{where}: {name} must have shape {expected} (num_layers * "
                    f"num_directions, {'' if unbatched else 'batch, '}hidden_size), got "
                    f"{tuple(t.shape)}"
                )
            out.append(t.unsqueeze(1) if unbatched else t)
        return out[0], (out[1] if is_lstm else None)

    @staticmethod
    def _repack(y: Tensor, like: PackedSequence) -> PackedSequence:
        """y (T, B, ·) in the caller's batch order packed as `like` (its batch_sizes and
        indices), as torch.nn returns a packed input's output."""
        order = like.sorted_indices
        lens = (like.batch_sizes.unsqueeze(0) > torch.arange(y.shape[1]).unsqueeze(1)).sum(1)
        if order is not None:
            y = y.index_select(1, order)  # rows longest first, as the packed data
        data = pack_padded_sequence(y, lens, enforce_sorted=True).data
        return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


class RNN(RNNBase):
    """Multi-layer Elman RNN on rnncore's kernels, as torch.nn.RNN (same arguments, parameters,
    state_dict and initialisation):

        h_t = act(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh),  act = tanh or relu

    Args:
        input_size: D. hidden_size: H. num_layers: L.
        nonlinearity: "tanh" or "relu".
        bias: whether the layers have b_ih and b_hh.
        batch_first: input and output are (B, T, ·) instead of (T, B, ·) (not the states).
        dropout: probability of zeroing each output unit of every layer but the last in
            training mode (torch.nn.functional.dropout); in [0, 1).
        bidirectional: each layer runs a forward and a reverse direction.
        device: None or the CPU. dtype: torch.float32 or torch.float64 (None: torch's default).

    forward(input, hx=None, lengths=None) -> (output, h_n): see RNNBase.forward.
    """

    cell = "rnn"
    gates = 1

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        nonlinearity: str = "tanh",
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device,
            dtype,
            {"nonlinearity": nonlinearity},
        )
        self.nonlinearity = nonlinearity


class LSTM(RNNBase):
    """Multi-layer LSTM on rnncore's kernels, as torch.nn.LSTM (gate order i, f, g, o).

    Arguments as RNN's without nonlinearity; proj_size must be 0 (no projection).
    forward(input, hx=None, lengths=None) -> (output, (h_n, c_n)): see RNNBase.forward.
    """

    cell = "lstm"
    gates = 4

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        proj_size: int = 0,
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        if integer("LSTM", "proj_size", proj_size, low=0) != 0:
            raise ValueError(f"LSTM: proj_size must be 0 (no projection), got {proj_size}")
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device,
            dtype,
            {},
        )
        self.proj_size = 0


class GRU(RNNBase):
    """Multi-layer GRU on rnncore's kernels, as torch.nn.GRU (gate order r, z, n).

    Arguments as RNN's without nonlinearity, plus reset_after (keyword only): True (default) is
    torch.nn.GRU's cell (the reset gate multiplies W_hn h + b_hn); False the GRU of Cho et al.
    (it multiplies h before W_hn), which torch.nn does not have.
    forward(input, hx=None, lengths=None) -> (output, h_n): see RNNBase.forward.
    """

    cell = "gru"
    gates = 3

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device: Any = None,
        dtype: torch.dtype | None = None,
        *,
        reset_after: bool = True,
    ) -> None:
        reset_after = flag("GRU", "reset_after", reset_after)
        super().__init__(
            input_size,
            hidden_size,
            num_layers,
            bias,
            batch_first,
            dropout,
            bidirectional,
            device,
            dtype,
            {"reset_after": reset_after},
        )
        self.reset_after = reset_after
