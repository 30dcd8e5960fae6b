"""Splitting a corpus and cutting it into char-rnn batches (re-exported by rnncore.data).

The token array is cut into B parallel streams and each batch is the next T tokens of every
stream, so batch i+1 continues each stream exactly where batch i left it and a recurrent state
can be carried from one batch to the next. The streams start over (and the state must be
reset) only where the data wraps, at the start of an epoch.

Shape legend
------------
    N           tokens in the corpus
    T           seq_length, time steps per batch
    B           batch_size, parallel streams
    K           batches per epoch: (N - 1) // (B*T)
    S           tokens per stream: K*T

    x, y        (T, B)   a batch: inputs and targets, y[t, b] the token after x[t, b]; int32,
                         the dtype the kernels read token ids in (one copy out of the corpus)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .checks import fraction, positive_int
from .corpus import Corpus, DataError

__all__ = [
    "Batch",
    "BatchIterator",
    "make_batch_iterators",
    "min_corpus_length",
    "split_ids",
]

Array = np.ndarray


# --- splitting and batching -------------------------------------------------------------------


def _split_sizes(n: int, val_fraction: float) -> tuple[int, int]:
    n_val = round(n * val_fraction)
    return n - n_val, n_val


def split_ids(ids: Array, val_fraction: float = 0.05) -> tuple[Array, Array]:
    """Split token ids into a training head and a validation tail (views, no copy).

    Args:
        ids: (N,) token ids.
        val_fraction: the share of tokens at the end that is held out, in [0, 1); the
            validation part has round(N * val_fraction) tokens.

    Returns:
        train (N - N_val,) and val (N_val,): consecutive, so the text of each stays intact.
    """
    f = fraction("split_ids", "val_fraction", val_fraction)
    n_train, _ = _split_sizes(int(ids.shape[0]), f)
    return ids[:n_train], ids[n_train:]


def min_corpus_length(batch_size: int, seq_length: int, val_fraction: float = 0.05) -> int:
    """The fewest tokens a corpus needs so that each split holds one batch.

    One batch of B streams × T steps needs B*T + 1 tokens (the targets are the inputs shifted
    by one); the training split needs that, and so does the validation split when
    val_fraction > 0.
    """
    where = "min_corpus_length"
    B = positive_int(where, "batch_size", batch_size)
    per_split = B * positive_int(where, "seq_length", seq_length) + 1
    f = fraction(where, "val_fraction", val_fraction)
    if f == 0:
        return per_split
    # Both split sizes grow monotonically with n: start just below the bound and walk up.
    n = max(
        per_split, math.floor((per_split - 1) / f) - 2, math.floor((per_split - 1) / (1 - f)) - 2
    )
    while min(_split_sizes(n, f)) < per_split:
        n += 1
    return n


class Batch(NamedTuple):
    """One batch of B streams × T steps.

    Attributes:
        x: (T, B) input token ids.
        y: (T, B) target ids: y[t, b] is the token that follows x[t, b] in stream b.
        epoch: the pass over the data this batch belongs to (0 for the first).
        index: its position in the pass, 0..batches_per_epoch-1.
    """

    x: Array
    y: Array
    epoch: int
    index: int

    @property
    def reset(self) -> bool:
        """True where the streams start over (index 0: the first batch, and wherever the data
        wraps): the hidden state carried from the previous batch must be reset to zeros."""
        return self.index == 0


class BatchIterator:
    """Endless char-rnn batches over a token array, with a position that can be saved.

    The first K*B*T + 1 tokens (K = (N - 1) // (B*T)) are cut into B streams of S = K*T
    consecutive tokens; stream b is ids[b*S : (b+1)*S] and batch i is the steps i*T..(i+1)*T-1
    of every stream::

        x[t, b] = ids[b*S + i*T + t]        y[t, b] = ids[b*S + i*T + t + 1]

    so stream b of batch i+1 continues exactly where it was at batch i, and the state a
    recurrent network ends batch i with is the right initial state for batch i+1. After
    batch K-1 the iterator wraps to batch 0 of the next epoch (``Batch.reset`` is then True).
    The last (N - 1) mod (B*T) tokens are not used.

    Args:
        ids: (N,) token ids (kept by reference: the batches are cut from views of it).
        batch_size: B, parallel streams.
        seq_length: T, time steps per batch.
        dtype: integer dtype of x and y; int32 by default, the dtype in which the kernels read
            token ids, so a batch goes to them without another copy.
        name: what the tokens are, for error messages (e.g. "training split").
        unit: what one token is, for error messages ("characters" or "bytes").

    Raises:
        DataError: fewer than B*T + 1 tokens (the message says how many are needed).
    """

    def __init__(
        self,
        ids: npt.ArrayLike,
        batch_size: int,
        seq_length: int,
        *,
        dtype: npt.DTypeLike = np.int32,
        name: str = "corpus",
        unit: str = "characters",
    ) -> None:
        a = np.ascontiguousarray(ids)
        if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
            raise TypeError(f"ids must be a 1-D integer array, got {a.ndim}-D {a.dtype}")
        self.batch_size = B = positive_int("BatchIterator", "batch_size", batch_size)
        self.seq_length = T = positive_int("BatchIterator", "seq_length", seq_length)
        self.dtype = np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.integer):
            raise TypeError(f"dtype must be an integer dtype, got {self.dtype}")
        n = int(a.size)
        if n < B * T + 1:
            raise DataError(
                f"the {name} has {n} {unit}: too short for batch_size {B} × seq_length {T}, "
                f"which needs at least {B * T + 1} (batch_size × seq_length + 1)"
            )
        self.num_tokens = n
        self.batches_per_epoch = K = (n - 1) // (B * T)
        S = K * T
        self._x = a[: B * S].reshape(B, S)  # (B, S) stream b is row b: views of ids, no copy
        self._y = a[1 : B * S + 1].reshape(B, S)  # (B, S) the same shifted by one token
        self._checksum = zlib.crc32(a[: B * S + 1])  # identifies the data for resume checks
        self.epoch = 0  # passes completed
        self.position = 0  # index of the next batch in the pass

    @property
    def tokens_per_batch(self) -> int:
        """B*T: the tokens (characters) one batch trains on."""
        return self.batch_size * self.seq_length

    @property
    def progress(self) -> float:
        """Epochs done as a fraction, e.g. 2.5 halfway through the third pass."""
        return self.epoch + self.position / self.batches_per_epoch

    def batch(self, index: int, epoch: int = 0) -> Batch:
        """Batch `index` (0..K-1) of a pass: random access, the iterator's position unchanged.

        Returns:
            a Batch with x, y (T, B) of ``dtype`` (fresh C-contiguous arrays).
        """
        if not 0 <= index < self.batches_per_epoch:
            raise IndexError(f"batch index must be in 0..{self.batches_per_epoch - 1}, got {index}")
        cols = slice(index * self.seq_length, (index + 1) * self.seq_length)
        x = self._x[:, cols].T.astype(self.dtype, order="C")  # (T, B)
        y = self._y[:, cols].T.astype(self.dtype, order="C")  # (T, B)
        return Batch(x, y, int(epoch), int(index))

    def __iter__(self) -> BatchIterator:
        return self

    def __next__(self) -> Batch:
        """The next batch; after the last of a pass, wraps to the first of the next epoch."""
        batch = self.batch(self.position, self.epoch)
        self.position += 1
        if self.position == self.batches_per_epoch:
            self.position = 0
            self.epoch += 1
        return batch

    def one_pass(self) -> Iterator[Batch]:
        """All K batches of one pass, from the start (e.g. for validation, with its own zero
        state): independent of and not moving the iterator's position."""
        for i in range(self.batches_per_epoch):
            yield self.batch(i)

    def state_dict(self) -> dict[str, int]:
        """The position, as plain ints (JSON-able, for a checkpoint).

        Keys: epoch, position (the next batch), and batch_size, seq_length, num_tokens and
        crc32 (of the tokens used), which load_state_dict checks so that a position is never
        applied to other data or another batch shape.
        """
        return {
            "epoch": self.epoch,
            "position": self.position,
            "batch_size": self.batch_size,
            "seq_length": self.seq_length,
            "num_tokens": self.num_tokens,
            "crc32": self._checksum,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a position saved by state_dict(): the next batch is the one that
        would have followed.

        Raises:
            ValueError: a key is missing, or the batch shape or the data differ from the
                saved ones (the message says which).
        """
        keys = ("epoch", "position", "batch_size", "seq_length", "num_tokens", "crc32")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"data position is missing key(s) {missing} (expected {list(keys)})")
        mine = self.state_dict()
        for key in ("batch_size", "seq_length"):
            if int(state[key]) != mine[key]:
                raise ValueError(
                    f"data position was saved with {key} {state[key]}, this iterator has "
                    f"{key} {mine[key]}: resume with the same batch shape"
                )
        if int(state["num_tokens"]) != mine["num_tokens"] or int(state["crc32"]) != mine["crc32"]:
            raise ValueError(
                f"data position was saved for other data ({state['num_tokens']} tokens, "
                f"crc32 {state['crc32']}; this iterator has {mine['num_tokens']} tokens, crc32 "
                f"{mine['crc32']}): resume with the same text file, encoding and val_fraction"
            )
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position < self.batches_per_epoch:
            raise ValueError(
                f"data position out of range: epoch {epoch}, position {position} "
                f"(expected epoch >= 0 and position in 0..{self.batches_per_epoch - 1})"
            )
        self.epoch, self.position = epoch, position

    def __repr__(self) -> str:
        return (
            f"BatchIterator({self.num_tokens} tokens, batch_size={self.batch_size}, "
            f"seq_length={self.seq_length}: {self.batches_per_epoch} batches per epoch, "
            f"at epoch {self.epoch} batch {self.position})"
        )


def make_batch_iterators(
    corpus: Corpus | npt.ArrayLike,
    batch_size: int,
    seq_length: int,
    *,
    val_fraction: float = 0.05,
    dtype: npt.DTypeLike = np.int32,
) -> tuple[BatchIterator, BatchIterator | None]:
    """Split a corpus (training head, validation tail) and batch both splits.

    Args:
        corpus: a Corpus, or (N,) token ids.
        batch_size, seq_length: B and T, the same for both splits.
        val_fraction: the share held out at the end, in [0, 1) (0: no validation split).
        dtype: integer dtype of the batches (int32 by default, as BatchIterator).

    Returns:
        (train, val): the iterators; val is None when val_fraction is 0.

    Raises:
        DataError: a split is too short for one batch; the message gives each split's size,
            what it needs (B*T + 1) and the length of file that would do.
    """
    if isinstance(corpus, Corpus):
        ids, unit, source = corpus.ids, corpus.unit, corpus.source or "corpus"
    else:
        ids, unit, source = np.asarray(corpus), "tokens", "corpus"
    where = "make_batch_iterators"
    B = positive_int(where, "batch_size", batch_size)
    T = positive_int(where, "seq_length", seq_length)
    f = fraction(where, "val_fraction", val_fraction)
    train, val = split_ids(ids, f)
    need = B * T + 1
    short = []
    if train.size < need:
        short.append(f"the training split ({1 - f:.0%}) has {train.size} {unit}")
    if f > 0 and val.size < need:
        short.append(f"the validation split ({f:.0%}) has {val.size} {unit}")
    if short:
        total = min_corpus_length(B, T, f)
        raise DataError(
            f"{source}: too short for batch_size {B} and seq_length {T}: "
            f"{' and '.join(short)}, and each split needs at least {need} "
            f"(batch_size × seq_length + 1), so the text needs at least {total} {unit} "
            f"(it has {ids.size}); use a longer text or a smaller batch_size or seq_length"
        )
    kw: dict[str, Any] = {"dtype": dtype, "unit": unit}
    train_it = BatchIterator(train, B, T, name="training split", **kw)
    val_it = BatchIterator(val, B, T, name="validation split", **kw) if f > 0 else None
    return train_it, val_it
