"""Weights in the safetensors format, under PyTorch's parameter names (docs/interop.md).

``save_weights`` writes a model's parameters to a ``.safetensors`` file that
``safetensors.torch.load_file`` reads straight into the state_dict of the equivalent
``torch.nn`` module; ``load_weights`` reads such a file, whoever wrote it (a torch module's
``safetensors.torch.save_file(module.state_dict(), path)``, or save_weights). The names:

    rnncore.RNN / LSTM / GRU   weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k}
                               (and ..._reverse): torch.nn.RNN / LSTM / GRU's own
    rnncore.CharRNN            embedding.weight (absent with one-hot input), rnn.<the stack's
                               names>, decoder.weight, decoder.bias: a torch module with the
                               attributes ``embedding`` (nn.Embedding), ``rnn`` (nn.LSTM ...)
                               and ``decoder`` (nn.Linear)

Only parameters travel (no optimizer state, generator, data position or vocabulary): training
checkpoints stay ``.npz`` (rnncore.checkpoint). The files are written and read with
``safetensors.numpy``: torch is not needed, the ``safetensors`` package is (the extra
``rnncore[safetensors]``), and it is imported only when one of these functions is called.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from .layers import GRU, LSTM, RNN
from .model import CharRNN

__all__ = ["load_weights", "save_weights"]

_MODELS = (RNN, LSTM, GRU, CharRNN)


def _safetensors_numpy(where: str) -> Any:
    """The safetensors.numpy module, or an ImportError saying how to install it."""
    try:
        import safetensors.numpy as stn
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{where}: needs the 'safetensors' package: pip install 'rnncore[safetensors]' "
            "(or pip install safetensors)"
        ) from e
    return stn


def _check_model(where: str, model: Any) -> None:
    if not isinstance(model, _MODELS):
        raise TypeError(
            f"{where}: model must be an rnncore.RNN, LSTM, GRU or CharRNN, got "
            f"{type(model).__name__}"
        )


def save_weights(model: RNN | LSTM | GRU | CharRNN, path: str | os.PathLike[str]) -> None:
    """Write the model's parameters to a safetensors file, under PyTorch's names.

    Args:
        model: an rnncore.RNN, LSTM or GRU stack (tensors ``weight_ih_l0`` (G*H, D) ...
            ``bias_hh_l{L-1}_reverse`` (G*H,), as its state_dict()), or a CharRNN
            (``embedding.weight`` (V, E), ``rnn.weight_ih_l0`` ..., ``decoder.weight`` (V, H),
            ``decoder.bias`` (V,)). Each tensor keeps the model's dtype (F32 or F64).
        path: the file to write (conventionally ``*.safetensors``); replaced if it exists.

    The header's metadata holds ``format: pt`` (what PyTorch tools look for) and the model's
    repr. ``safetensors.torch.load_file(path)`` then gives a dict that the torch.nn module of
    the same configuration loads with ``load_state_dict``.

    Raises:
        TypeError: model is not one of the four classes.
        ImportError: the safetensors package is not installed.
    """
    where = "save_weights"
    _check_model(where, model)
    stn = _safetensors_numpy(where)
    tensors = {name: np.ascontiguousarray(a) for name, a in model.state_dict().items()}
    stn.save_file(tensors, os.fspath(path), metadata={"format": "pt", "rnncore": repr(model)})


def load_weights(model: RNN | LSTM | GRU | CharRNN, path: str | os.PathLike[str]) -> None:
    """Read a safetensors file of PyTorch-named parameters into the model, in place.

    The file must hold exactly the model's parameters (the names save_weights writes, which
    are also the state_dict keys of the equivalent torch.nn module), each with its exact
    shape; floating-point tensors of another precision (F16, F32, F64) are rounded to the
    model's dtype. BF16 tensors load where NumPy can hold them, i.e. once the ml_dtypes package
    is imported (onnx imports it): widened exactly to float32, then rounded to the model's
    dtype. Nothing is changed unless the whole file fits (model.load_state_dict).

    Args:
        model: an rnncore.RNN, LSTM, GRU or CharRNN of the file's configuration.
        path: the safetensors file.

    Raises:
        TypeError: model is not one of the four classes, or a tensor is not floating-point.
        ValueError: the file is not a safetensors file NumPy can read (e.g. BF16 tensors
            without ml_dtypes),
            names are missing or unexpected (all are listed), or a tensor has the wrong shape
            (the message names it).
        FileNotFoundError: no such file.
        ImportError: the safetensors package is not installed.
    """
    where = "load_weights"
    _check_model(where, model)
    stn = _safetensors_numpy(where)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{where}: no such file: {path!r}")
    try:
        tensors = stn.load_file(path)
    except Exception as e:  # safetensors' own error type, or NumPy's for an unknown dtype
        raise ValueError(
            f"{where}: {path!r} is not a safetensors file of NumPy-readable tensors "
            f"(F16/F32/F64; BF16 needs ml_dtypes imported): {type(e).__name__}: {e}"
        ) from e
    # ml_dtypes' bfloat16 is no np.floating: widen it (exactly) so that the load rounds it.
    tensors = {
        k: v.astype(np.float32) if v.dtype.name == "bfloat16" else v for k, v in tensors.items()
    }
    name = "CharRNN" if isinstance(model, CharRNN) else type(model).__name__
    try:
        model.load_state_dict(tensors)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}: {path!r} does not fit this {name}: {e}") from e
