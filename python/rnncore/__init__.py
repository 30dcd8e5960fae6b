"""rnncore: fast recurrent-network kernels (RNN, LSTM, GRU) in C++ with a NumPy API.

Functional kernels work on NumPy arrays, time-major: x (T, B, D), states (B, H), PyTorch's
weight layout. The dtype of a call (float32 or float64) is the dtype of its weights.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import reference
from ._core import (
    GRUCache,
    LSTMCache,
    RNNCache,
    blas_info,
    get_num_threads,
    gru_backward,
    gru_forward,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
    set_num_threads,
)
from .layers import GRU, LSTM, RNN

try:
    __version__ = version("rnncore")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "GRUCache",
    "LSTMCache",
    "RNNCache",
    "__version__",
    "blas_info",
    "get_num_threads",
    "gru_backward",
    "gru_forward",
    "lstm_backward",
    "lstm_forward",
    "reference",
    "rnn_backward",
    "rnn_forward",
    "set_num_threads",
]
