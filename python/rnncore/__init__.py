"""rnncore: fast recurrent-network kernels (RNN, LSTM, GRU) in C++ with a NumPy API.

Functional kernels work on NumPy arrays, time-major: x (T, B, D), states (B, H), PyTorch's
weight layout. The dtype of a call (float32 or float64) is the dtype of its weights.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from . import diagnostics, reference
from ._core import (
    GRUCache,
    LSTMCache,
    RNNCache,
    WorkspacePool,
    blas_info,
    get_num_threads,
    gru_backward,
    gru_forward,
    linear_cross_entropy,
    lstm_backward,
    lstm_forward,
    rnn_backward,
    rnn_forward,
    set_num_threads,
    softmax_cross_entropy,
)
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from .data import Corpus, DataError, Vocabulary, load_corpus, make_batch_iterators
from .diagnostics import StateGradients, decay_per_step, state_gradients
from .layers import GRU, LSTM, RNN
from .model import CharRNN
from .modules import Embedding, Linear
from .onnx_io import export_onnx, import_onnx  # onnx itself is imported only when called
from .optim import SGD, Adam, clip_grad_norm
from .params import ParamGroup, load_params, save_params
from .reporting import ConsoleReporter, FitResult, Reporter
from .sample import generate, sample_stream
from .train import StepInfo, TrainConfig, Trainer, TrainingDiverged
from .weights import load_weights, save_weights

try:
    __version__ = version("rnncore")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "GRU",
    "LSTM",
    "RNN",
    "SGD",
    "Adam",
    "CharRNN",
    "Checkpoint",
    "CheckpointError",
    "ConsoleReporter",
    "Corpus",
    "DataError",
    "Embedding",
    "FitResult",
    "GRUCache",
    "LSTMCache",
    "Linear",
    "ParamGroup",
    "RNNCache",
    "Reporter",
    "StateGradients",
    "StepInfo",
    "TrainConfig",
    "Trainer",
    "TrainingDiverged",
    "Vocabulary",
    "WorkspacePool",
    "__version__",
    "blas_info",
    "clip_grad_norm",
    "decay_per_step",
    "diagnostics",
    "export_onnx",
    "generate",
    "get_num_threads",
    "gru_backward",
    "gru_forward",
    "import_onnx",
    "linear_cross_entropy",
    "load_checkpoint",
    "load_corpus",
    "load_params",
    "load_weights",
    "lstm_backward",
    "lstm_forward",
    "make_batch_iterators",
    "reference",
    "rnn_backward",
    "rnn_forward",
    "sample_stream",
    "save_checkpoint",
    "save_params",
    "save_weights",
    "set_num_threads",
    "softmax_cross_entropy",
    "state_gradients",
]
