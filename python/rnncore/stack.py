"""RecurrentStack: what RNN, LSTM and GRU (rnncore.layers) share, on rnncore's kernels.

A layer object owns its parameters (PyTorch's names and layouts, so a ``torch.nn`` state_dict
loads as is), their gradients, an RNG for its default initialisation and inter-layer dropout,
and the caches of its last training forward. Python owns the stacking and the dropout; each
layer of the stack is one call of the C++ kernel over the whole sequence.

Shape legend
------------
    T           sequence length
    B           batch size
    D           input_size
    H           hidden_size
    L           num_layers
    G           gates stacked in the weights: 1 (RNN), 4 (LSTM: i, f, g, o), 3 (GRU: r, z, n)

    x           (T, B, D)    inputs, time-major
    y           (T, B, H)    outputs of the last layer (its hidden state after every step)
    state       (L, B, H)    hidden state of every layer; LSTM: a tuple (h, c) of two such arrays
    weight_ih_l0            (G*H, D)     input-to-hidden weights of layer 0
    weight_ih_l{k}, k >= 1  (G*H, H)     layer k's input is layer k-1's output
    weight_hh_l{k}          (G*H, H)
    bias_ih_l{k}, bias_hh_l{k}  (G*H,)   (absent with bias=False)

Training step::

    layer.zero_grad()
    y, state = layer.forward(x, state)             # keeps the caches on the layer
    dx, dstate = layer.backward(dy)                # adds into layer.grads
    for name, p in layer.parameters().items():     # the live arrays
        p -= lr * layer.grads[name]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from . import _core
from .checks import flag, fraction, positive_int
from .params import load_arrays

__all__ = ["RecurrentStack"]

Array = np.ndarray
_PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # per layer, PyTorch's order

S = TypeVar("S")  # the state type: an (L, B, H) array, or a tuple (h, c) of them for the LSTM


def _kernel(name: str) -> Callable[..., Any]:
    """The compiled kernel `name` (e.g. "lstm_forward")."""
    return getattr(_core, name)


@dataclass(frozen=True)
class _Tape:
    """What backward needs from the last training forward."""

    caches: list[Any]  # one kernel cache per layer
    masks: list[Array | None]  # (T, B, H) dropout mask applied to layer k's output, or None
    T: int
    B: int
    input_weight_given: bool  # layer 0 ran with a caller's input weight (see forward)


class RecurrentStack(Generic[S]):
    """The shared implementation of RNN, LSTM and GRU: parameters, forward and backward.

    Not built directly: a subclass sets the class attributes below and passes its cell
    options. The public API (forward, backward, parameters, grads, state_dict, generator,
    options, layer_weights, use_buffers, input_weight_grad) is documented here once.
    """

    _gates: ClassVar[int]  # G: gate blocks stacked in each weight
    _forward: ClassVar[str]  # kernel names in rnncore._core / rnncore.reference
    _backward: ClassVar[str]
    _state_names: ClassVar[tuple[str, ...]]  # ("h",), or ("h", "c") packed as a tuple
    _option_defaults: ClassVar[dict[str, Any]] = {}  # cell options passed to the kernels
    cell: ClassVar[str]  # "rnn", "lstm" or "gru": the kind of cell, as the kernels name it

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        *,
        bias: bool,
        dropout: float,
        dtype: npt.DTypeLike,
        seed: int | None,
        options: dict[str, Any],
    ) -> None:
        where = type(self).__name__
        self.input_size = positive_int(where, "input_size", input_size)
        self.hidden_size = positive_int(where, "hidden_size", hidden_size)
        self.num_layers = positive_int(where, "num_layers", num_layers)
        self.bias = flag(where, "bias", bias)
        self.dropout = fraction(where, "dropout", dropout)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype!r}") from None
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"{where}: dtype must be float32 or float64, got {self.dtype}")
        self._options = options

        # One generator for the initialisation and then every dropout mask: the same seed gives
        # the same weights and the same sequence of masks.
        self._generator = np.random.default_rng(seed)
        self._params: dict[str, Array] = {}
        H, G = self.hidden_size, self._gates
        k = 1 / np.sqrt(H)
        for layer in range(self.num_layers):
            d_in = self.input_size if layer == 0 else H
            shapes = {"weight_ih": (G * H, d_in), "weight_hh": (G * H, H)}
            if self.bias:
                shapes |= {"bias_ih": (G * H,), "bias_hh": (G * H,)}
            for name, shape in shapes.items():
                # Drawn in float64 then rounded: float32 and float64 layers of one seed agree.
                w = self._generator.uniform(-k, k, shape)
                self._params[f"{name}_l{layer}"] = w.astype(self.dtype)
        self._grads = {name: np.zeros_like(p) for name, p in self._params.items()}
        self._tape: _Tape | None = None
        self._input_weight_grad: Array | None = None  # see forward(input_weight=)

    # --- what the stack is --------------------------------------------------------------------

    @property
    def generator(self) -> np.random.Generator:
        """The layer's random generator: it drew the initial weights (in state_dict order) and
        draws every dropout mask. An owner that adds parameters or dropout of its own (as
        CharRNN does) draws from it too, so one seed fixes the whole model; saving and
        restoring ``generator.bit_generator.state`` resumes the sequence of masks exactly."""
        return self._generator

    @property
    def options(self) -> dict[str, Any]:
        """The cell options the kernels get, e.g. ``{"nonlinearity": "tanh"}`` for an RNN,
        ``{"reset_after": True}`` for a GRU, ``{}`` for the LSTM (a copy)."""
        return dict(self._options)

    # --- parameters ---------------------------------------------------------------------------

    def parameters(self) -> dict[str, Array]:
        """The parameters by PyTorch name, e.g. ``weight_ih_l0`` (G*H, D), ``bias_hh_l1`` (G*H,).

        The arrays are the layer's own (not copies): an optimizer updates them in place. The
        dict is new on each call, so adding or removing keys does not change the layer.
        """
        return dict(self._params)

    @property
    def grads(self) -> dict[str, Array]:
        """Gradients of the loss by parameter name, same shapes and dtype as parameters().

        The arrays are the layer's own: backward adds into them, zero_grad() zeroes them.
        """
        return dict(self._grads)

    def zero_grad(self) -> None:
        """Set every gradient to zero (in place: arrays obtained from ``grads`` stay valid)."""
        for g in self._grads.values():
            g.fill(0)

    def state_dict(self) -> dict[str, Array]:
        """Copies of the parameters by PyTorch name, in PyTorch's order.

        ``torch_module.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``
        loads them into the torch.nn module of the same configuration.
        """
        return {name: p.copy() for name, p in self._params.items()}

    def load_state_dict(self, state_dict: dict[str, npt.ArrayLike]) -> None:
        """Copy parameters into the layer's arrays (in place, so references to them stay valid).

        Accepts what state_dict() returns, or ``{k: v.numpy() for k, v in
        torch_module.state_dict().items()}``. Every key must be present with its exact shape;
        floating-point values of another precision are rounded to the layer's dtype. Nothing is
        changed unless the whole dict is valid.

        Raises:
            ValueError: keys missing or unexpected (all are listed), or a value has the wrong
                shape (the message names the key).
            TypeError: a value is not a floating-point array.
        """
        load_arrays(f"{type(self).__name__}.load_state_dict", self._params, state_dict)

    def use_buffers(self, params: Mapping[str, Array], grads: Mapping[str, Array]) -> None:
        """Compute with these arrays from now on instead of the layer's own.

        For an owner that keeps every parameter in one flat buffer (a ParamGroup: pass
        ``group.views(prefix)``), so that an optimizer step on the buffer updates the layer.

        Args:
            params: name -> array, the same names, shapes and dtype as parameters(), each
                C-contiguous: the layer reads its weights from them (their values are the
                owner's; the layer's own arrays are dropped).
            grads: the same for the gradients: backward adds into them.

        Raises:
            ValueError: other names, or an array of another shape, dtype or layout.
        """
        where = f"{type(self).__name__}.use_buffers"
        for given, what in ((params, "params"), (grads, "grads")):
            if set(given) != set(self._params):
                raise ValueError(f"{where}: {what} must have keys {sorted(self._params)}")
            for name, a in given.items():
                p = self._params[name]
                if a.shape != p.shape or a.dtype != p.dtype or not a.flags.c_contiguous:
                    raise ValueError(
                        f"{where}: {what}[{name!r}] must be C-contiguous {p.dtype} of shape "
                        f"{p.shape}, got {a.dtype} {a.shape}"
                    )
        self._params = {name: params[name] for name in self._params}
        self._grads = {name: grads[name] for name in self._params}

    # --- forward / backward -------------------------------------------------------------------

    def forward(
        self,
        x: npt.ArrayLike,
        state: S | None = None,
        *,
        training: bool = True,
        input_weight: Array | None = None,
    ) -> tuple[Array, S]:
        """Run the stack over a whole sequence.

        Args:
            x: (T, B, D) inputs, of the layer's dtype; or a (T, B) integer array of token ids
                in [0, input_size), standing for one-hot rows (gathered, never built).
            state: initial state, or None for zeros: (L, B, H) for RNN and GRU; for the LSTM a
                tuple (h, c) of two (L, B, H) arrays (either may be None).
            training: keep the caches for backward() and apply dropout between layers. With
                False nothing is kept (and the caches of an earlier forward are dropped).
            input_weight: (G*H, D') used by layer 0 instead of weight_ih_l0, of the layer's
                dtype; D' (its number of columns) is then the input size, e.g. the vocabulary
                for a model that folds its embedding into layer 0 (weight_ih_l0 embeddingᵀ,
                gathered by token ids). backward() then leaves this weight's gradient in
                ``input_weight_grad`` and adds nothing into ``grads["weight_ih_l0"]``.

        Returns:
            y: (T, B, H) outputs of the last layer (no dropout is applied to them).
            state: final state in the format of the argument ((L, B, H), or (h, c) for the
                LSTM), to pass to the next forward when feeding a long sequence in chunks.

        Raises:
            TypeError: x or state is not an array of the layer's dtype (lists are converted;
                arrays of another dtype are not: cast them explicitly).
            ValueError: x is not (T, B, input_size), or state is not (num_layers, B, H).

        Not thread-safe: the caches live on the layer object, so one layer must not run
        forward/backward from several threads at once.
        """
        where = f"{type(self).__name__}.forward"
        training = flag(where, "training", training)
        d_in = self.input_size if input_weight is None else input_weight.shape[1]
        if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.integer):
            # One-hot input: (T, B) token ids; the kernel gathers weight columns, no dx.
            if x.ndim != 2:  # an integer (T, B, D) array is a dtype mistake, not token ids
                raise TypeError(
                    f"{where}: x must have dtype {self.dtype} (the layer's dtype), or be a (T, B) "
                    f"integer array of token ids; got {x.dtype} of shape {x.shape}"
                )
        else:
            x = self._array(where, "x", x, "(T, B, D)")
            if x.ndim != 3 or x.shape[2] != d_in:
                raise ValueError(
                    f"{where}: x must have shape (T, B, D) with D = input_size = {d_in}, "
                    f"got shape {x.shape}"
                )
        T, B = x.shape[:2]
        states0 = self._unpack(where, "state", state, B)
        self._tape = None  # frees the previous caches before the kernels allocate new ones
        self._input_weight_grad = None
        fwd = _kernel(self._forward)
        p, n = self.dropout, len(self._state_names)
        caches: list[Any] = []
        masks: list[Array | None] = []
        finals: list[list[Array]] = [[] for _ in range(n)]
        inp = x  # (T, B, D) for layer 0, then (T, B, H)
        for layer in range(self.num_layers):
            s0 = [None if s is None else s[layer] for s in states0]  # (B, H) each
            weights = self.layer_weights(layer)
            if layer == 0 and input_weight is not None:
                weights = (input_weight, *weights[1:])
            y, *rest = fwd(inp, *s0, *weights, training=training, **self._options)
            for f, s in zip(finals, rest[:n], strict=True):
                f.append(s)  # (B, H)
            caches.append(rest[n])
            mask = None
            if training and p > 0 and layer < self.num_layers - 1:
                # Inverted dropout: kept units are scaled by 1/(1-p) so that no rescaling is
                # needed at inference. The mask is kept for backward. float32 draws cost half
                # as much as float64 ones and resolve p to 2^-24.
                keep = self._generator.random(y.shape, dtype=np.float32) >= p  # (T, B, H)
                mask = keep * self.dtype.type(1 / (1 - p))  # (T, B, H) in the layer's dtype
                y = y * mask
            masks.append(mask)
            inp = y
        if training:
            self._tape = _Tape(caches, masks, T, B, input_weight is not None)
        return inp, self._pack([np.stack(f) for f in finals])

    def backward(self, dy: npt.ArrayLike | None, dstate: S | None = None) -> tuple[Array, S]:
        """Backpropagate through the last forward(training=True); add into ``grads``.

        Args:
            dy: (T, B, H) gradient of the loss with respect to y, or None for zeros.
            dstate: gradient with respect to the final state forward returned, in its format
                ((L, B, H), or (dh, dc) for the LSTM, either may be None), or None for zeros.

        Returns:
            dx: (T, B, D) gradient with respect to x (None when x was integer token ids).
            dstate0: gradient with respect to forward's initial state, in the state's format;
                returned also when forward got state=None (the gradient at the zero state).

        The caches are kept until the next forward, so backward may be called again (its
        parameter gradients are added again). After a forward with ``input_weight``, that
        weight's gradient is in ``input_weight_grad`` instead of ``grads``.

        Raises:
            RuntimeError: the last forward was not a training forward (or there was none).
        """
        where = f"{type(self).__name__}.backward"
        tape = self._tape
        if tape is None:
            raise RuntimeError(
                f"{where}: nothing to backpropagate through: call forward(x, training=True) "
                "first (a forward with training=False keeps no caches)"
            )
        L, T, B, H = self.num_layers, tape.T, tape.B, self.hidden_size
        if dy is not None:
            dy = self._array(where, "dy", dy, "(T, B, H)")
            if dy.shape != (T, B, H):
                raise ValueError(
                    f"{where}: dy must have shape (T, B, H) = {(T, B, H)} (from the forward), "
                    f"got shape {dy.shape}"
                )
        dstates = self._unpack(where, "dstate", dstate, B)
        bwd = _kernel(self._backward)
        n = len(self._state_names)
        d0 = [np.empty((L, B, H), self.dtype) for _ in range(n)]  # (L, B, H) each
        grad = dy  # (T, B, H) gradient into the current layer's output
        for layer in reversed(range(L)):
            dn = [None if d is None else d[layer] for d in dstates]  # (B, H) each
            dx, *rest = bwd(grad, *dn, tape.caches[layer])
            for out, d in zip(d0, rest[:n], strict=True):
                out[layer] = d
            for name, g in zip(_PARAM_NAMES, rest[n:], strict=True):
                if layer == 0 and name == "weight_ih" and tape.input_weight_given:
                    self._input_weight_grad = g  # the caller's input weight: theirs to use
                elif g is not None:
                    self._grads[f"{name}_l{layer}"] += g
            if layer > 0 and tape.masks[layer - 1] is not None:
                dx = dx * tape.masks[layer - 1]  # the same mask as the forward
            grad = dx
        return grad, self._pack(d0)

    @property
    def input_weight_grad(self) -> Array | None:
        """(G*H, D') gradient of the loss with respect to forward's ``input_weight``, left by
        the latest backward (replaced, not added, by a second backward on the same forward);
        None before that backward, or when the forward had no input_weight."""
        return self._input_weight_grad

    def layer_weights(self, layer: int) -> tuple[Array, Array, Array | None, Array | None]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of layer `layer`, the arrays the kernels
        compute with (not copies): (G*H, D or H), (G*H, H), (G*H,), (G*H,); the biases are
        None when bias=False.

        Raises:
            IndexError: layer is not in [0, num_layers).
        """
        if not 0 <= layer < self.num_layers:
            raise IndexError(
                f"{type(self).__name__}.layer_weights: layer must be in [0, {self.num_layers}), "
                f"got {layer}"
            )
        w_ih, w_hh, b_ih, b_hh = (self._params.get(f"{n}_l{layer}") for n in _PARAM_NAMES)
        assert w_ih is not None and w_hh is not None
        return w_ih, w_hh, b_ih, b_hh

    # --- helpers ------------------------------------------------------------------------------

    def _array(self, where: str, name: str, a: Any, shape: str) -> Array:
        """`a` as an array of the layer's dtype: arrays must have it, lists are converted."""
        if isinstance(a, np.ndarray):
            if a.dtype.kind != "f" or a.dtype.newbyteorder("=") != self.dtype:
                raise TypeError(
                    f"{where}: {name} must have dtype {self.dtype} (the layer's dtype), "
                    f"got {a.dtype}"
                )
            return a  # the kernels take the other byte order too (converting it once)
        if isinstance(a, (list, tuple)):
            try:
                return np.asarray(a, dtype=self.dtype)
            except (TypeError, ValueError):
                pass
        raise TypeError(
            f"{where}: {name} must be a {self.dtype} array of shape {shape}, got {type(a).__name__}"
        )

    def _unpack(self, where: str, name: str, state: Any, B: int) -> list[Array | None]:
        """A state or its gradient as one (L, B, H) array (or None) per state component."""
        names = self._state_names
        if state is None:
            return [None] * len(names)
        if len(names) == 1:
            parts, labels = [state], [name]
        else:
            if not isinstance(state, (tuple, list)) or len(state) != len(names):
                raise TypeError(
                    f"{where}: {name} must be a tuple ({', '.join(names)}) of arrays of shape "
                    f"(L, B, H), or None, got {type(state).__name__}"
                    + (f" of length {len(state)}" if isinstance(state, (tuple, list)) else "")
                )
            parts, labels = list(state), [f"{name}[{i}] ({s})" for i, s in enumerate(names)]
        out: list[Array | None] = []
        expected = (self.num_layers, B, self.hidden_size)
        for part, label in zip(parts, labels, strict=True):
            if part is None:
                out.append(None)
                continue
            a = self._array(where, label, part, "(L, B, H)")
            if a.shape != expected:
                raise ValueError(
                    f"{where}: {label} must have shape (L, B, H) = {expected} "
                    f"(num_layers, batch, hidden_size), got shape {a.shape}"
                )
            out.append(a)
        return out

    def _pack(self, states: Sequence[Array]) -> Any:
        return states[0] if len(states) == 1 else tuple(states)

    def __repr__(self) -> str:
        args = [str(self.input_size), str(self.hidden_size)]
        if self.num_layers != 1:
            args.append(f"num_layers={self.num_layers}")
        for key, default in self._option_defaults.items():
            if self._options[key] != default:
                args.append(f"{key}={self._options[key]!r}")
        if not self.bias:
            args.append("bias=False")
        if self.dropout:
            args.append(f"dropout={self.dropout}")
        if self.dtype != np.float32:
            args.append(f"dtype={self.dtype}")
        return f"{type(self).__name__}({', '.join(args)})"
