"""RecurrentStack: what RNN, LSTM and GRU (rnncore.layers) share, on rnncore's kernels.

A layer object owns its parameters (PyTorch's names and layouts, so a ``torch.nn`` state_dict
loads as is), their gradients, an RNG for its default initialisation and inter-layer dropout,
and the caches of its last training forward. Python owns the stacking, the directions and the
dropout; each direction of each layer is one call of the C++ kernel over the whole sequence.
What forward and backward accept is checked in rnncore.stack_inputs.

The shape legend (T, B, D, H, L, G, dirs) and a training step are in rnncore.layers' module
docstring. With ``wavefront = True`` a unidirectional LSTM stack runs its layers at once instead,
each on its own thread, handing rows over step by step (rnncore.wavefront).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
import numpy.typing as npt

from . import _core, wavefront
from .checks import flag, fraction, positive_int
from .params import load_arrays
from .stack_inputs import as_float_array, check_input, check_lengths, pack_state, unpack_state

__all__ = ["RecurrentStack"]

Array = np.ndarray
_PARAM_NAMES = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")  # per layer, PyTorch's order

S = TypeVar("S")  # the state type: an (L, B, H) array, or a tuple (h, c) of them for the LSTM


def _kernel(name: str) -> Callable[..., Any]:
    """The compiled kernel `name` (e.g. "lstm_forward")."""
    return getattr(_core, name)


def _key(name: str, layer: int, reverse: bool) -> str:
    """PyTorch's parameter name, e.g. "weight_ih_l0" or "bias_hh_l1_reverse"."""
    return f"{name}_l{layer}{'_reverse' if reverse else ''}"


@dataclass(frozen=True)
class _Tape:
    """What backward needs from the last training forward."""

    caches: list[list[Any]]  # caches[layer][direction]: one kernel cache per direction
    masks: list[Array | None]  # (T, B, dirs*H) dropout mask applied to layer k's output, or None
    T: int
    B: int
    input_weight_given: bool  # layer 0 ran with a caller's input weight (see forward)
    wavefront: bool = False  # the forward ran on the wavefront schedule (rnncore.wavefront)


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
        bidirectional: bool = False,
    ) -> None:
        where = type(self).__name__
        self.input_size = positive_int(where, "input_size", input_size)
        self.hidden_size = positive_int(where, "hidden_size", hidden_size)
        self.num_layers = positive_int(where, "num_layers", num_layers)
        self.bias = flag(where, "bias", bias)
        self.dropout = fraction(where, "dropout", dropout)
        self.bidirectional = flag(where, "bidirectional", bidirectional)
        try:
            self.dtype = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"{where}: dtype must be float32 or float64, got {dtype!r}") from None
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"{where}: dtype must be float32 or float64, got {self.dtype}")
        self._options = options

        # One generator for the initialisation and then every dropout mask: the same seed gives
        # the same weights and the same sequence of masks. Drawn in state_dict order, so a
        # unidirectional stack draws exactly what it drew before bidirectional existed.
        self._generator = np.random.default_rng(seed)
        self._params: dict[str, Array] = {}
        H, G = self.hidden_size, self._gates
        k = 1 / np.sqrt(H)
        for layer in range(self.num_layers):
            d_in = self.input_size if layer == 0 else self.num_directions * H
            shapes = {"weight_ih": (G * H, d_in), "weight_hh": (G * H, H)}
            if self.bias:
                shapes |= {"bias_ih": (G * H,), "bias_hh": (G * H,)}
            for reverse in self._directions:
                for name, shape in shapes.items():
                    # Drawn in float64 then rounded: float32 and float64 layers of one seed agree.
                    w = self._generator.uniform(-k, k, shape)
                    self._params[_key(name, layer, reverse)] = w.astype(self.dtype)
        self._grads = {name: np.zeros_like(p) for name, p in self._params.items()}
        self._tape: _Tape | None = None
        self._input_weight_grad: Array | None = None  # see forward(input_weight=)
        # The buffers the kernels allocate (caches, scratch, outputs) are reused from call to
        # call through this stack's own pool: a training loop faults its memory in once.
        self._pool = _core.WorkspacePool()
        self._wavefront = False

    # --- what the stack is --------------------------------------------------------------------

    @property
    def num_directions(self) -> int:
        """2 for a bidirectional stack, else 1: y has num_directions * hidden_size features and
        the state num_layers * num_directions rows."""
        return 2 if self.bidirectional else 1

    @property
    def _directions(self) -> tuple[bool, ...]:
        """The `reverse` flag of each direction of a layer, in PyTorch's order."""
        return (False, True) if self.bidirectional else (False,)

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

    @property
    def wavefront(self) -> bool:
        """Run the layers at once on the wavefront schedule (rnncore.wavefront: each layer's
        kernel call on its own thread, a step behind the layer below) instead of one after the
        other. For unidirectional LSTM stacks of 2+ layers called without lengths, with at least
        one of rnncore's threads per layer; other calls run the default schedule. Results match
        the default schedule's (bitwise on the packed float32 kernel). Off by default: slower on
        the 2-core machines measured (docs/performance.md)."""
        return self._wavefront

    @wavefront.setter
    def wavefront(self, on: bool) -> None:
        self._wavefront = flag(f"{type(self).__name__}.wavefront", "wavefront", on)

    # --- parameters ---------------------------------------------------------------------------

    def parameters(self) -> dict[str, Array]:
        """The parameters by PyTorch name, e.g. ``weight_ih_l0`` (G*H, D), ``bias_hh_l1`` (G*H,),
        ``weight_hh_l0_reverse`` (G*H, H) in a bidirectional stack.

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
        """Copies of the parameters by PyTorch name, in PyTorch's order (per layer: the forward
        direction's weight_ih, weight_hh, bias_ih, bias_hh, then the reverse direction's).

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
        lengths: npt.ArrayLike | None = None,
        training: bool = True,
        input_weight: Array | None = None,
    ) -> tuple[Array, S]:
        """Run the stack over a whole sequence (each direction of each layer in one kernel call).

        Args:
            x: (T, B, D) inputs, of the layer's dtype; or a (T, B) integer array of token ids
                in [0, input_size), standing for one-hot rows (gathered, never built).
            state: initial state, or None for zeros: (L*dirs, B, H) for RNN and GRU; for the
                LSTM a tuple (h, c) of two such arrays (either may be None). Rows in PyTorch's
                order: layer 0 forward, layer 0 reverse (bidirectional), layer 1 forward, ...
            lengths: (B,) integer steps each sequence runs, in [0, T], any order; None for all
                T. As PyTorch's packed sequences padded with zeros: y[t, b] = 0 (in both
                directions' halves) for t >= lengths[b], x there is never read, the forward
                direction's final state is the state after step lengths[b]-1 and the reverse
                direction's the state after reading x[0] (it starts at x[lengths[b]-1]); a
                length 0 leaves that row's initial state as its final state (docs/sequences.md).
            training: keep the caches for backward() and apply dropout between layers. With
                False nothing is kept (and the caches of an earlier forward are dropped).
            input_weight: (G*H, D') used by layer 0 instead of weight_ih_l0, of the layer's
                dtype; D' (its number of columns) is then the input size, e.g. the vocabulary
                for a model that folds its embedding into layer 0 (weight_ih_l0 embeddingᵀ,
                gathered by token ids). backward() then leaves this weight's gradient in
                ``input_weight_grad`` and adds nothing into ``grads["weight_ih_l0"]``.
                Unidirectional stacks only (a bidirectional layer 0 has two input weights).

        Returns:
            y: (T, B, dirs*H) outputs of the last layer (no dropout is applied to them);
                bidirectional: y[..., :H] the forward direction, y[..., H:] the reverse.
            state: final state in the format of the argument ((L*dirs, B, H), or (h, c) for
                the LSTM), to pass to the next forward when feeding a long sequence in chunks.

        Raises:
            TypeError: x or state is not an array of the layer's dtype (lists are converted;
                arrays of another dtype are not: cast them explicitly); lengths is not an
                integer array (floats and bools are refused).
            ValueError: x is not (T, B, input_size), state is not (L*dirs, B, H), lengths is
                not (B,) or has a value outside [0, T], or input_weight is given to a
                bidirectional stack.

        Not thread-safe: the caches live on the layer object, so one layer must not run
        forward/backward from several threads at once.
        """
        where = f"{type(self).__name__}.forward"
        training = flag(where, "training", training)
        if input_weight is not None and self.bidirectional:
            raise ValueError(
                f"{where}: input_weight is supported by unidirectional stacks only, got one for "
                "a bidirectional stack (its layer 0 has two input weights, weight_ih_l0 and "
                "weight_ih_l0_reverse)"
            )
        d_in = self.input_size if input_weight is None else input_weight.shape[1]
        x = check_input(where, x, self.dtype, d_in)
        T, B = x.shape[:2]
        lengths = check_lengths(where, lengths, T, B)  # (B,) int64 or None
        states0 = self._unpack(where, "state", state, B)
        self._tape = None  # frees the previous caches before the kernels allocate new ones
        self._input_weight_grad = None
        if self._wavefront and wavefront.applies(
            self.cell, self.num_layers, self.bidirectional, lengths, T
        ):
            return wavefront.stack_forward(self, x, states0, training, input_weight)
        fwd = _kernel(self._forward)
        n, dirs = len(self._state_names), self.num_directions
        caches: list[list[Any]] = []
        masks: list[Array | None] = []
        finals: list[list[Array]] = [[] for _ in range(n)]
        inp = x  # (T, B, D) for layer 0, then (T, B, dirs*H)
        with self._pool:  # every kernel buffer from the stack's own pool
            for layer in range(self.num_layers):
                outs: list[Array] = []
                caches.append([])
                for d, reverse in enumerate(self._directions):
                    s0 = [
                        None if s is None else s[layer * dirs + d] for s in states0
                    ]  # (B, H) each
                    weights = self.layer_weights(layer, reverse=reverse)
                    if layer == 0 and input_weight is not None:
                        weights = (input_weight, *weights[1:])
                    # Only what differs from the default is passed: a unidirectional stack without
                    # lengths calls the kernels exactly as it always did.
                    seq: dict[str, Any] = {} if lengths is None else {"lengths": lengths}
                    if reverse:
                        seq["reverse"] = True
                    y, *rest = fwd(inp, *s0, *weights, training=training, **seq, **self._options)
                    for f, s in zip(finals, rest[:n], strict=True):
                        f.append(s)  # (B, H)
                    caches[layer].append(rest[n])
                    outs.append(y)  # (T, B, H)
                y = outs[0] if dirs == 1 else np.concatenate(outs, axis=2)  # (T, B, dirs*H)
                mask = self._dropout_mask(y.shape, training, layer)
                if mask is not None:
                    y = y * mask
                masks.append(mask)
                inp = y
        if training:
            self._tape = _Tape(caches, masks, T, B, input_weight is not None)
        return inp, pack_state([np.stack(f) for f in finals])

    def backward(self, dy: npt.ArrayLike | None, dstate: S | None = None) -> tuple[Array, S]:
        """Backpropagate through the last forward(training=True); add into ``grads``.

        Args:
            dy: (T, B, dirs*H) gradient of the loss with respect to y, or None for zeros.
                After a forward with lengths, dy past a sequence's length is ignored.
            dstate: gradient with respect to the final state forward returned, in its format
                ((L*dirs, B, H), or (dh, dc) for the LSTM, either may be None), or None for
                zeros.

        Returns:
            dx: (T, B, D) gradient with respect to x (None when x was integer token ids); 0
                past each sequence's length. Bidirectional: the sum of both directions'.
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
        L, T, B, H, dirs = self.num_layers, tape.T, tape.B, self.hidden_size, self.num_directions
        if dy is not None:
            layout = "(T, B, 2H)" if self.bidirectional else "(T, B, H)"
            dy = as_float_array(where, "dy", dy, self.dtype, layout)
            if dy.shape != (T, B, dirs * H):
                raise ValueError(
                    f"{where}: dy must have shape {layout} = {(T, B, dirs * H)} (from the "
                    f"forward), got shape {dy.shape}"
                )
        dstates = self._unpack(where, "dstate", dstate, B)
        if tape.wavefront:
            return wavefront.stack_backward(self, tape, dy, dstates)
        bwd = _kernel(self._backward)
        n = len(self._state_names)
        d0 = [np.empty((L * dirs, B, H), self.dtype) for _ in range(n)]  # (L*dirs, B, H) each
        with self._pool:  # every kernel buffer from the stack's own pool
            grad = dy  # (T, B, dirs*H) gradient into the current layer's output
            for layer in reversed(range(L)):
                dx_sum: Array | None = None  # (T, B, D or dirs*H) both directions' dx, summed
                for d, reverse in enumerate(self._directions):
                    i = layer * dirs + d  # the direction's row of the state
                    dn = [None if ds is None else ds[i] for ds in dstates]  # (B, H) each
                    g = grad
                    if dirs > 1 and grad is not None:
                        g = np.ascontiguousarray(grad[..., d * H : (d + 1) * H])  # (T, B, H)
                    dx, *rest = bwd(g, *dn, tape.caches[layer][d])
                    for out, ds in zip(d0, rest[:n], strict=True):
                        out[i] = ds
                    self._add_grads(tape, layer, reverse, rest[n:])
                    dx_sum = dx if dx_sum is None else dx_sum + dx  # dx is None for token ids
                if layer > 0 and tape.masks[layer - 1] is not None:
                    dx_sum = dx_sum * tape.masks[layer - 1]  # the same mask as the forward
                grad = dx_sum
        return grad, pack_state(d0)

    @property
    def input_weight_grad(self) -> Array | None:
        """(G*H, D') gradient of the loss with respect to forward's ``input_weight``, left by
        the latest backward (replaced, not added, by a second backward on the same forward);
        None before that backward, or when the forward had no input_weight."""
        return self._input_weight_grad

    def layer_weights(
        self, layer: int, *, reverse: bool = False
    ) -> tuple[Array, Array, Array | None, Array | None]:
        """(weight_ih, weight_hh, bias_ih, bias_hh) of one direction of layer `layer`, the
        arrays the kernels compute with (not copies): (G*H, D or dirs*H), (G*H, H), (G*H,),
        (G*H,); the biases are None when bias=False.

        Args:
            layer: in [0, num_layers).
            reverse: the reverse direction's (``..._l{layer}_reverse``); bidirectional only.

        Raises:
            IndexError: layer is not in [0, num_layers).
            TypeError: reverse is not a bool. ValueError: reverse=True on a unidirectional stack.
        """
        where = f"{type(self).__name__}.layer_weights"
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"{where}: layer must be in [0, {self.num_layers}), got {layer}")
        if flag(where, "reverse", reverse) and not self.bidirectional:
            raise ValueError(f"{where}: reverse=True needs a bidirectional stack")
        w_ih, w_hh, b_ih, b_hh = (self._params.get(_key(n, layer, reverse)) for n in _PARAM_NAMES)
        assert w_ih is not None and w_hh is not None
        return w_ih, w_hh, b_ih, b_hh

    # --- helpers ------------------------------------------------------------------------------

    def _add_grads(self, tape: _Tape, layer: int, reverse: bool, grads: Any) -> None:
        """Add a direction's (dw_ih, dw_hh, db_ih, db_hh) in (layer 0's dw_ih: see forward)."""
        for name, gw in zip(_PARAM_NAMES, grads, strict=True):
            if layer == 0 and name == "weight_ih" and tape.input_weight_given:
                self._input_weight_grad = gw  # the caller's input weight: theirs to use
            elif gw is not None:
                self._grads[_key(name, layer, reverse)] += gw

    def _dropout_mask(self, shape: tuple[int, ...], training: bool, layer: int) -> Array | None:
        """The dropout mask of layer `layer`'s output (shape (T, B, dirs*H)), or None.

        Inverted dropout: kept units are scaled by 1/(1-p) so that no rescaling is needed at
        inference. The mask is kept for backward. float32 draws cost half as much as float64
        ones and resolve p to 2^-24. Bidirectional: one mask over the concatenated output, as
        PyTorch. Drawn layer after layer, so both schedules draw the same masks.
        """
        p = self.dropout
        if not training or p == 0 or layer == self.num_layers - 1:
            return None
        keep = self._generator.random(shape, dtype=np.float32) >= p
        return keep * self.dtype.type(1 / (1 - p))

    def _unpack(self, where: str, name: str, state: Any, B: int) -> list[Array | None]:
        """A state or its gradient as one (L*dirs, B, H) array (or None) per state component."""
        expected = (self.num_layers * self.num_directions, B, self.hidden_size)
        return unpack_state(
            where,
            name,
            state,
            self._state_names,
            expected,
            self.dtype,
            bidirectional=self.bidirectional,
        )

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
        if self.bidirectional:
            args.append("bidirectional=True")
        if self.dtype != np.float32:
            args.append(f"dtype={self.dtype}")
        return f"{type(self).__name__}({', '.join(args)})"
