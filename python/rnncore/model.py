"""A character-level language model: embedding -> RNN/LSTM/GRU stack -> linear -> softmax.

The heavy parts are C++: the recurrent stack runs rnncore's kernels (one call per layer over
the whole sequence), and the output projection of all T*B positions, the softmax, the
cross-entropy and their backward are one fused call (``linear_cross_entropy``). Python only
gathers the embedding rows and scatters their gradient.

Shape legend
------------
    T, B        time steps and streams of a batch
    V           vocabulary size
    E           embedding size (V with one-hot input)
    H, L        hidden size and number of layers of the stack

    x, y        (T, B)     input and target token ids
    state       (L, B, H)  the stack's state; LSTM: a tuple (h, c) of two

Parameters (PyTorch's names, so the same architecture in torch loads a state_dict as is)::

    embedding.weight        (V, E)    absent with one-hot input (embedding_size=0)
    rnn.weight_ih_l{k} ...  the stack's parameters (rnncore.LSTM etc.)
    decoder.weight          (V, H)
    decoder.bias            (V,)

They live in one flat buffer (``model.params``, an optim.ParamGroup), so an optimizer step
updates all of them with a few array operations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from . import _core
from .checks import int_at_least
from .layers import GRU, LSTM, RNN
from .params import ParamGroup

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = ["CELLS", "CharRNN"]

Array = np.ndarray
CELLS: tuple[str, ...] = ("lstm", "gru", "rnn")


class CharRNN:
    """Embedding (or one-hot) -> RNN/LSTM/GRU stack -> linear -> softmax cross-entropy.

    Args:
        vocab_size: V, the number of distinct tokens.
        cell: "lstm", "gru" (PyTorch's GRU, reset gate after the matmul) or "rnn" (tanh).
        hidden_size: H.
        num_layers: L.
        embedding_size: E; 0 for one-hot input (the stack's first layer then has V inputs).
        dropout: while training, between the stack's layers and on the top layer's output
            (as char-rnn), in [0, 1).
        dtype: np.float32 or np.float64.
        seed: initial weights and dropout masks (None: fresh entropy).

    Attributes:
        params: the ParamGroup holding every parameter (``params.params[name]``) and gradient
            (``params.grads[name]``), by PyTorch name.
        rnn: the recurrent stack (rnncore.LSTM / GRU / RNN), computing with views of params.
        config: the constructor arguments (without seed), enough to rebuild the model.
    """

    def __init__(
        self,
        vocab_size: int,
        *,
        cell: str = "lstm",
        hidden_size: int = 128,
        num_layers: int = 2,
        embedding_size: int = 64,
        dropout: float = 0.0,
        dtype: npt.DTypeLike = np.float32,
        seed: int | None = None,
    ) -> None:
        V = int_at_least("CharRNN", "vocab_size", vocab_size, 1)
        H = int_at_least("CharRNN", "hidden_size", hidden_size, 1)
        L = int_at_least("CharRNN", "num_layers", num_layers, 1)
        E = int_at_least("CharRNN", "embedding_size", embedding_size, 0)
        if cell not in CELLS:
            raise ValueError(f"CharRNN: cell must be one of {', '.join(CELLS)}, got {cell!r}")
        cls = {"lstm": LSTM, "gru": GRU, "rnn": RNN}[cell]
        self.rnn: RNN | LSTM | GRU = cls(
            E or V, H, L, dropout=dropout, dtype=dtype, seed=seed
        )  # validates dropout and dtype
        self.dtype = self.rnn.dtype
        self.cell = cell
        self._pool = _core.WorkspacePool()  # the decoder's buffers, reused from step to step
        self.vocab_size, self.hidden_size, self.num_layers, self.embedding_size = V, H, L, E
        self.config: dict[str, Any] = {
            "vocab_size": V,
            "cell": cell,
            "hidden_size": H,
            "num_layers": L,
            "embedding_size": E,
            "dropout": self.rnn.dropout,
            "dtype": self.dtype.name,
        }
        # The stack's generator also draws the other initial weights: one seed, one model.
        rng = self.rnn.generator
        init: dict[str, Array] = {}
        if E:
            init["embedding.weight"] = rng.standard_normal((V, E))  # nn.Embedding: N(0, 1)
        init |= {f"rnn.{k}": v for k, v in self.rnn.parameters().items()}
        k = 1 / np.sqrt(H)  # nn.Linear: U(-1/sqrt(in), 1/sqrt(in))
        init["decoder.weight"] = rng.uniform(-k, k, (V, H))
        init["decoder.bias"] = rng.uniform(-k, k, V)
        self.params = ParamGroup(init, dtype=self.dtype)
        self.rnn.use_buffers(*self.params.views("rnn."))
        # (x, dh, dw, db, mask) of the last training loss(): what backward() needs.
        self._tape: tuple[Array, Array, Array, Array, Array | None] | None = None

    # --- parameters ---------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Array]:
        """Copies of every parameter by PyTorch name (``embedding.weight``, ``rnn.weight_ih_l0``,
        ..., ``decoder.weight``, ``decoder.bias``)."""
        return self.params.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, npt.ArrayLike]) -> None:
        """Copy parameters in (every name, exact shapes; see ParamGroup.load_state_dict)."""
        self.params.load_state_dict(state_dict)

    def zero_grad(self) -> None:
        """Zero every gradient (one fill of the flat buffer)."""
        self.params.zero_grad()

    @property
    def num_parameters(self) -> int:
        """The number of trainable values."""
        return self.params.size

    # --- forward / backward -------------------------------------------------------------------

    def _input_weight(self) -> Array | None:
        """Layer 0's input weight over the vocabulary: (G*H, V) = weight_ih_l0 embeddingᵀ.

        The kernels take the token ids as one-hot input, so the embedding lookup and layer 0's
        input projection become one gather of this product's columns (and their backward one
        scatter-add): the (T*B, E) x (E, G*H) product and its two gradients are never formed.
        None with one-hot input, where weight_ih_l0 already is (G*H, V).
        """
        if not self.embedding_size:
            return None
        p = self.params.params
        with self._pool:
            return _core._matmul(p["rnn.weight_ih_l0"], p["embedding.weight"], trans_b=True)

    def _ids(self, name: str, a: npt.ArrayLike, shape: tuple[int, ...] | None = None) -> Array:
        ids = np.asarray(a)
        if ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(
                f"CharRNN: {name} must be a (T, B) integer array of token ids, got "
                f"{ids.ndim}-D {ids.dtype}"
            )
        if shape is not None and ids.shape != shape:
            raise ValueError(f"CharRNN: {name} must have shape {shape} (as x), got {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.vocab_size)].flat[0]
            raise ValueError(f"CharRNN: {name} must hold ids in [0, {self.vocab_size}), got {bad}")
        return ids

    def loss(
        self, x: npt.ArrayLike, y: npt.ArrayLike, state: Any = None, *, training: bool = True
    ) -> tuple[float, Any]:
        """Mean cross-entropy (nats per token) of predicting y from x.

        Args:
            x: (T, B) input ids; y: (T, B) targets (y[t, b] follows x[t, b]).
            state: the stack's initial state ((L, B, H), or (h, c) for the LSTM), None: zeros.
            training: keep what backward() needs and apply dropout; False for evaluation.

        Returns:
            (loss, state): the mean loss (a float) and the final state, for the next batch.
        """
        x = self._ids("x", x)
        y = self._ids("y", y, x.shape)
        T, B = x.shape
        out, final = self.rnn.forward(
            x, state, training=training, input_weight=self._input_weight()
        )
        mask = None
        p_drop = self.rnn.dropout
        if training and p_drop > 0:
            # char-rnn's dropout on the top layer's output too (the stack, as PyTorch's, drops
            # only between layers): inverted, from the stack's generator, kept for backward.
            keep = self.rnn.generator.random(out.shape, dtype=np.float32) >= p_drop  # (T, B, H)
            mask = keep * self.dtype.type(1 / (1 - p_drop))
            out = out * mask
        h = out.reshape(T * B, self.hidden_size)  # (T*B, H)
        p = self.params.params
        with self._pool:
            loss, dh, dw, db = _core.linear_cross_entropy(
                h, p["decoder.weight"], p["decoder.bias"], y.reshape(-1), grad=training
            )
        if training:
            self._tape = (x, dh, dw, db, mask)
        return loss, final

    def backward(self) -> None:
        """Add the gradients of the last training loss() into ``params.grads``.

        Truncated BPTT: no gradient flows into the initial state of the batch.
        """
        if self._tape is None:
            raise RuntimeError("CharRNN.backward: call loss(x, y, training=True) first")
        x, dh, dw, db, mask = self._tape
        self._tape = None
        if mask is not None:
            dh = dh * mask.reshape(dh.shape)
        g = self.params.grads
        g["decoder.weight"] += dw
        g["decoder.bias"] += db
        T, B = x.shape
        self.rnn.backward(dh.reshape(T, B, self.hidden_size))  # no dx: the input is token ids
        if self.embedding_size:
            # The gradient of weight_ih_l0 embeddingᵀ (G*H, V), split between its two factors.
            dw0 = self.rnn.input_weight_grad
            p = self.params.params
            with self._pool:
                g["rnn.weight_ih_l0"] += _core._matmul(dw0, p["embedding.weight"])
                g["embedding.weight"] += _core._matmul(dw0, p["rnn.weight_ih_l0"], trans_a=True)

    def train_step(
        self, x: npt.ArrayLike, y: npt.ArrayLike, state: Any = None
    ) -> tuple[float, Any]:
        """loss(x, y, state, training=True) then backward(): returns (loss, final state)."""
        loss, final = self.loss(x, y, state, training=True)
        self.backward()
        return loss, final

    def zero_state(self, batch_size: int) -> Any:
        """The zero state for a batch of B streams, in the stack's format."""
        z = np.zeros((self.num_layers, batch_size, self.hidden_size), self.dtype)
        return (z, z.copy()) if self.cell == "lstm" else z

    def __repr__(self) -> str:
        inp = (
            f"Embedding({self.vocab_size}, {self.embedding_size})"
            if self.embedding_size
            else (f"OneHot({self.vocab_size})")
        )
        return (
            f"CharRNN({inp} -> {self.rnn!r} -> Linear({self.hidden_size}, {self.vocab_size}); "
            f"{self.num_parameters} parameters)"
        )

    # --- construction from a configuration ------------------------------------------------------

    @classmethod
    def from_config(
        cls, config: TrainConfig | Mapping[str, Any], vocab_size: int | None = None
    ) -> CharRNN:
        """A new model (fresh weights) as a configuration describes it.

        Args:
            config: a TrainConfig (its cell, hidden_size, num_layers, embedding_size, dropout,
                dtype and seed), or a model's ``config`` dict as a checkpoint stores it
                (vocab_size, cell, hidden_size, num_layers, embedding_size, dropout, dtype;
                no seed: fresh entropy, the weights are then loaded over it).
            vocab_size: V, needed with a TrainConfig (``len(corpus.vocab)``); a dict carries
                its own.

        Raises:
            KeyError: a dict without vocab_size or dtype. TypeError: a dict with a key that is
                no constructor argument, or a TrainConfig without vocab_size.
            ValueError: a bad value (as the constructor).
        """
        if isinstance(config, Mapping):
            cfg = dict(config)
            return cls(cfg.pop("vocab_size"), dtype=np.dtype(cfg.pop("dtype")), **cfg)
        if vocab_size is None:
            raise TypeError("CharRNN.from_config: a TrainConfig needs vocab_size")
        c = config
        return cls(
            vocab_size,
            cell=c.cell,
            hidden_size=c.hidden_size,
            num_layers=c.num_layers,
            embedding_size=c.embedding_size,
            dropout=c.dropout,
            dtype=np.dtype(c.dtype),
            seed=c.seed,
        )
