"""Type stub of rnncore's compiled extension (csrc/bindings/: module.cpp and one file per area).

Token ids (x of the cells, targets, prime) may be any integer array: an int32 C-contiguous
array is read as it is, any other is converted to int32 in one copy."""

from typing import Literal

import numpy as np
import numpy.typing as npt

_Float = np.float32 | np.float64
_Array = npt.NDArray[_Float]
_ArrayLike = npt.ArrayLike

__version__: str

class _Cache:
    @property
    def shape(self) -> tuple[int, int, int, int]:
        """(T, B, D, H)."""
    @property
    def dtype(self) -> np.dtype[_Float]: ...
    @property
    def nbytes(self) -> int:
        """Bytes of workspace held."""

class RNNCache(_Cache):
    """Opaque workspace of rnn_forward(training=True), consumed by rnn_backward."""

    @property
    def nonlinearity(self) -> Literal["tanh", "relu"]: ...

class LSTMCache(_Cache):
    """Opaque workspace of lstm_forward(training=True), consumed by lstm_backward."""

class GRUCache(_Cache):
    """Opaque workspace of gru_forward(training=True), consumed by gru_backward."""

    @property
    def reset_after(self) -> bool: ...

def rnn_forward(
    x: _ArrayLike,
    h0: _ArrayLike | None,
    w_ih: _ArrayLike,
    w_hh: _ArrayLike,
    b_ih: _ArrayLike | None = None,
    b_hh: _ArrayLike | None = None,
    *,
    nonlinearity: Literal["tanh", "relu"] = "tanh",
    lengths: _ArrayLike | None = None,
    reverse: bool = False,
    training: bool = True,
) -> tuple[_Array, _Array, RNNCache | None]:
    """Vanilla RNN forward: x (T,B,D) or (T,B) integer ids (one-hot input), h0 (B,H) | None,
    w_ih (H,D), w_hh (H,H), b (H,) | None -> y (T,B,H), h_n (B,H), cache.
    lengths (B,) integers in [0, T] | None: y is 0 past each length, h_n the state after each
    row's own last step (h0 for length 0); reverse reads x[len-1] .. x[0], writing each output
    where it read. Work proportional to sum(lengths)."""

def rnn_backward(
    dy: _ArrayLike | None, dh_n: _ArrayLike | None, cache: RNNCache
) -> tuple[_Array | None, _Array, _Array, _Array, _Array | None, _Array | None]:
    """BPTT: dy (T,B,H) | None, dh_n (B,H) | None -> dx (T,B,D) (None for id input),
    dh0 (B,H), dw_ih (H,D), dw_hh (H,H), db_ih (H,) | None, db_hh (H,) | None."""

def lstm_forward(
    x: _ArrayLike,
    h0: _ArrayLike | None,
    c0: _ArrayLike | None,
    w_ih: _ArrayLike,
    w_hh: _ArrayLike,
    b_ih: _ArrayLike | None = None,
    b_hh: _ArrayLike | None = None,
    *,
    lengths: _ArrayLike | None = None,
    reverse: bool = False,
    training: bool = True,
    stream_in: _StepStream | None = None,
    stream_out: _StepStream | None = None,
) -> tuple[_Array, _Array, _Array, LSTMCache | None]:
    """LSTM forward: x (T,B,D) or (T,B) integer ids (one-hot input), h0/c0 (B,H) | None,
    w_ih (4H,D), w_hh (4H,H), b (4H,) | None -> y (T,B,H), h_n (B,H), c_n (B,H), cache.
    Gate order i, f, g, o. lengths, reverse: as rnn_forward (c_n like h_n). stream_in (x is
    its rows) / stream_out (h_t times its mask, (T,B,H)): the wavefront schedule."""

def lstm_backward(
    dy: _ArrayLike | None,
    dh_n: _ArrayLike | None,
    dc_n: _ArrayLike | None,
    cache: LSTMCache,
    *,
    stream_in: _StepStream | None = None,
    stream_out: _StepStream | None = None,
) -> tuple[_Array | None, _Array, _Array, _Array, _Array, _Array | None, _Array | None]:
    """BPTT: -> dx (T,B,D) (None for id input or with stream_out), dh0 (B,H), dc0 (B,H),
    dw_ih (4H,D), dw_hh (4H,H), db_ih (4H,) | None, db_hh (4H,) | None. stream_in (dy is its
    rows) / stream_out (dx times its mask, (T,B,D)): the wavefront schedule."""

class _StepStream:
    """A (T,B,W) buffer one kernel call writes step by step while another reads it (the
    wavefront schedule, rnncore.wavefront)."""

    def __init__(self, rows: _Array, mask: _Array | None = None) -> None: ...
    @property
    def rows(self) -> _Array:
        """The buffer (T,B,W)."""
    @property
    def done(self) -> int:
        """Steps published so far."""
    @property
    def failed(self) -> bool:
        """Whether the writer failed (its reader then raises)."""
    def fail(self) -> None:
        """Mark the stream failed: its reader stops waiting and raises."""

def gru_forward(
    x: _ArrayLike,
    h0: _ArrayLike | None,
    w_ih: _ArrayLike,
    w_hh: _ArrayLike,
    b_ih: _ArrayLike | None = None,
    b_hh: _ArrayLike | None = None,
    *,
    reset_after: bool = True,
    lengths: _ArrayLike | None = None,
    reverse: bool = False,
    training: bool = True,
) -> tuple[_Array, _Array, GRUCache | None]:
    """GRU forward: x (T,B,D) or (T,B) integer ids (one-hot input), h0 (B,H) | None,
    w_ih (3H,D), w_hh (3H,H), b (3H,) | None -> y (T,B,H), h_n (B,H), cache. Gate order r, z, n.
    lengths, reverse: as rnn_forward."""

def gru_backward(
    dy: _ArrayLike | None, dh_n: _ArrayLike | None, cache: GRUCache
) -> tuple[_Array | None, _Array, _Array, _Array, _Array | None, _Array | None]:
    """BPTT: -> dx (T,B,D) (None for id input), dh0 (B,H), dw_ih (3H,D), dw_hh (3H,H),
    db_ih (3H,) | None, db_hh (3H,) | None."""

def set_num_threads(n: int) -> None:
    """Set the number of OpenMP threads rnncore's kernels use (n >= 1)."""

class WorkspacePool:
    """Buffers that kernel calls reuse across calls, owned by one object: inside ``with pool:``
    every buffer a call allocates on this thread comes from the pool and goes back to it.
    A copy or pickle is a new, empty pool with the same limits."""

    def __init__(self, max_blocks: int = 64, max_bytes: int = 1 << 30) -> None: ...
    @property
    def nbytes(self) -> int:
        """Bytes of freed buffers the pool keeps now."""
    @property
    def blocks(self) -> int:
        """Freed buffers the pool keeps now."""
    @property
    def reused(self) -> int:
        """Buffer requests served from the pool so far."""
    @property
    def allocated(self) -> int:
        """Buffer requests that found nothing to reuse and allocated."""
    def clear(self) -> int:
        """Free every kept buffer; returns the bytes freed."""
    def __enter__(self) -> WorkspacePool: ...
    def __exit__(self, *exc: object) -> bool: ...
    def __copy__(self) -> WorkspacePool: ...
    def __deepcopy__(self, memo: object) -> WorkspacePool: ...

def _set_thread_limit(n: int) -> int:
    """Cap the kernels' threads for the calling OS thread (0: none); returns the previous cap."""
    ...

def get_num_threads() -> int:
    """Threads rnncore's kernels use: set_num_threads(), else OMP_NUM_THREADS, else all cores;
    at most the calling thread's _set_thread_limit cap."""

def blas_info() -> dict[str, str | int]:
    """The vendored OpenBLAS: corename, config, blas_threads (always 1); rnncore's float32
    recurrent_kernel and pointwise_kernel (avx512, avx2 or portable)."""

def _matmul(
    a: _ArrayLike, b: _ArrayLike, trans_a: bool = False, trans_b: bool = False
) -> _Array: ...
def _set_gemm_path(name: Literal["blas", "portable", "avx2", "avx512"]) -> None: ...
def _gemm_path() -> str: ...
def _set_pointwise_path(name: Literal["portable", "avx2", "avx512"]) -> None: ...
def _pointwise_path() -> str: ...
def _activation(name: Literal["tanh", "sigmoid"], x: npt.ArrayLike) -> _Array: ...
def softmax_cross_entropy(
    logits: _ArrayLike,
    targets: npt.ArrayLike,
    *,
    grad: bool = True,
    mask: npt.ArrayLike | None = None,
    ignore_index: int | None = None,
) -> tuple[float, _Array | None]:
    """Fused softmax + cross-entropy: logits (N,V), targets (N,) ids -> mean loss (nats) over
    the K kept positions, dlogits (N,V) = (softmax - onehot) / K there and 0 elsewhere, or None
    with grad=False. mask (N,) bool (True keeps) and ignore_index (drop targets equal to it)
    choose the kept positions; dropped targets are not range-checked; K = 0 gives 0.0 and a
    zero gradient."""

def linear_cross_entropy(
    h: _ArrayLike,
    w: _ArrayLike,
    b: _ArrayLike | None,
    targets: npt.ArrayLike,
    *,
    grad: bool = True,
    mask: npt.ArrayLike | None = None,
    ignore_index: int | None = None,
) -> tuple[float, _Array | None, _Array | None, _Array | None]:
    """logits = h wᵀ + b with h (N,H), w (V,H), b (V,) | None; softmax cross-entropy against
    targets (N,) -> mean loss over the kept positions, dh (N,H) (0 at dropped positions),
    dw (V,H), db (V,) | None (None with grad=False); mask, ignore_index as
    softmax_cross_entropy."""

class _Sampler:
    """A model's weights packed once for sampling (a copy); run() per chunk of tokens."""

    def __init__(
        self,
        cell: Literal["rnn_tanh", "rnn_relu", "lstm", "gru", "gru_reset_before"],
        layers: list[tuple[_Array, _Array, _Array | None, _Array | None]],
        embedding: _Array | None,
        w_out: _Array,
        b_out: _Array | None,
    ) -> None: ...
    def run(
        self,
        h: _Array,
        c: _Array | None,
        prime: npt.NDArray[np.integer],
        n: int,
        temperature: float,
        top_k: int,
        greedy: bool,
        rng_state: npt.NDArray[np.uint64],
    ) -> npt.NDArray[np.int32]: ...
