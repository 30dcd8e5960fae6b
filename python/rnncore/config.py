"""The configuration of a training run (rnncore.TrainConfig): model, data, optimizer, length.

A plain dataclass with the defaults of char-rnn and torch-rnn, checked on construction, that
round-trips through a dict (``to_dict`` / ``from_dict``): a checkpoint stores it as JSON, and
``rnncore train`` builds it from its flags (which carry the same names).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from .model import CELLS
from .optim import OPTIMIZERS

__all__ = ["TrainConfig"]


@dataclass
class TrainConfig:
    """Model, optimizer and schedule of a run; the defaults are char-rnn's and torch-rnn's.

    Model: cell ("lstm", "gru", "rnn"), hidden_size, num_layers, embedding_size (0: one-hot),
    dropout, dtype ("float32"/"float64"), seed (weights, dropout masks; None: fresh).
    Data: seq_length (T), batch_size (B), val_fraction (the validation tail).
    Optimizer: optimizer ("adam", "rmsprop", "adagrad", "sgd"), lr, grad_clip (0: none),
    clip_mode ("value": clamp each element, as char-rnn and torch-rnn; "norm": the global L2
    norm), lr_decay ("none", "step", "cosine"), lr_decay_factor and lr_decay_every (steps) for
    "step", min_lr for "cosine" (over max_steps), warmup_steps.
    Length: max_steps and/or max_epochs (None: unbounded; the first reached stops).
    nonfinite: "skip" (drop a step whose gradients are not finite and go on; 10 in a row stop
    the run) or "stop" (raise TrainingDiverged at the first).
    """

    cell: str = "lstm"
    hidden_size: int = 128
    num_layers: int = 2
    embedding_size: int = 64
    dropout: float = 0.0
    dtype: str = "float32"
    seed: int | None = 0
    seq_length: int = 50
    batch_size: int = 50
    val_fraction: float = 0.05
    optimizer: str = "adam"
    lr: float = 2e-3
    grad_clip: float = 5.0
    clip_mode: Literal["value", "norm"] = "value"
    lr_decay: Literal["none", "step", "cosine"] = "none"
    lr_decay_factor: float = 0.5
    lr_decay_every: int = 1000
    min_lr: float = 0.0
    warmup_steps: int = 0
    max_steps: int | None = None
    max_epochs: float | None = None
    nonfinite: Literal["skip", "stop"] = "skip"

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise ValueError(
                f"TrainConfig: cell must be one of {', '.join(CELLS)}, got {self.cell!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"TrainConfig: optimizer must be one of {', '.join(OPTIMIZERS)}, "
                f"got {self.optimizer!r}"
            )
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"TrainConfig: dtype must be float32 or float64, got {self.dtype!r}")
        if self.clip_mode not in ("value", "norm"):
            raise ValueError(
                f"TrainConfig: clip_mode must be 'value' or 'norm', got {self.clip_mode!r}"
            )
        if not (self.grad_clip >= 0 and math.isfinite(self.grad_clip)):
            raise ValueError(
                f"TrainConfig: grad_clip must be a number >= 0, got {self.grad_clip!r}"
            )
        if self.nonfinite not in ("skip", "stop"):
            raise ValueError(
                f"TrainConfig: nonfinite must be 'skip' or 'stop', got {self.nonfinite!r}"
            )
        for name in ("max_steps", "max_epochs"):
            v = getattr(self, name)
            if v is not None and not v > 0:
                raise ValueError(f"TrainConfig: {name} must be > 0 or None, got {v!r}")
        if self.lr_decay == "cosine" and self.max_steps is None:
            raise ValueError("TrainConfig: lr_decay='cosine' needs max_steps (its length)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
