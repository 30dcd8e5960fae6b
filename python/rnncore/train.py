"""Training a character-level language model: truncated BPTT over char-rnn batches.

A Trainer owns the model, the optimizer, the two batch iterators and the hidden state carried
from one training batch to the next (reset only where the data wraps). Validation runs over
the whole validation split with a state of its own, so it never disturbs the training state.
Everything a run needs to continue exactly is in its checkpoint: N steps straight and N/2
steps, a save, a resume and N/2 more give the same parameters (bitwise with one thread).

Typical use::

    corpus = load_corpus()                             # tiny-shakespeare
    trainer = Trainer(corpus, TrainConfig(max_steps=2000))
    trainer.run(callback=lambda t, info: print(info.step, info.loss))
    trainer.save("run.npz")
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .data import Corpus, make_batch_iterators
from .model import CELLS, CharRNN
from .optim import (
    OPTIMIZERS,
    LRSchedule,
    clip_grad_norm,
    clip_grad_value,
    grad_norm,
    grads_finite,
    make_optimizer,
)

__all__ = ["StepInfo", "TrainConfig", "Trainer", "TrainingDiverged"]

Array = np.ndarray


class TrainingDiverged(RuntimeError):
    """Non-finite gradients (or loss) with ``nonfinite="stop"``: the step was not applied."""


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


@dataclass
class StepInfo:
    """What one training step did (passed to the callback)."""

    step: int  # optimizer steps completed, this one included
    epoch: float  # passes over the training split, as a fraction
    loss: float  # mean cross-entropy of the batch, nats per character
    grad_norm: float  # global L2 norm of the gradients before clipping
    lr: float  # the learning rate this step used
    skipped: bool  # True: gradients were not finite and the step was not applied
    chars_per_sec: float  # training throughput, averaged since the run started
    elapsed_s: float  # seconds of training in this run (evaluation excluded)


class Trainer:
    """Trains a CharRNN on a corpus with truncated backpropagation through time.

    Args:
        corpus: the tokenised text; its tail (``val_fraction``) is the validation split.
        config: a TrainConfig.
        model: an existing model to train (its vocabulary must match); None: a new one.

    Attributes:
        model, optimizer, schedule, train, val (batch iterators; val None without a split),
        step (optimizer steps done), state (the hidden state carried to the next batch),
        history (dicts of step, val_loss: every evaluation), best_val_loss.
    """

    def __init__(self, corpus: Corpus, config: TrainConfig, *, model: CharRNN | None = None):
        self.corpus, self.config = corpus, config
        c = config
        self.train, self.val = make_batch_iterators(
            corpus, c.batch_size, c.seq_length, val_fraction=c.val_fraction
        )
        V = len(corpus.vocab)
        if model is None:
            model = CharRNN(
                V,
                cell=c.cell,
                hidden_size=c.hidden_size,
                num_layers=c.num_layers,
                embedding_size=c.embedding_size,
                dropout=c.dropout,
                dtype=np.dtype(c.dtype),
                seed=c.seed,
            )
        elif model.vocab_size != V:
            raise ValueError(
                f"Trainer: the model predicts {model.vocab_size} tokens but the corpus has {V}"
            )
        self.model = model
        self.optimizer = make_optimizer(c.optimizer, model.params, lr=c.lr)
        self.schedule = LRSchedule(
            c.lr,
            decay=c.lr_decay,
            factor=c.lr_decay_factor,
            every=max(1, c.lr_decay_every),
            total_steps=c.max_steps if c.lr_decay == "cosine" else None,
            min_lr=c.min_lr,
            warmup_steps=c.warmup_steps,
        )
        self.step = 0
        self.state: Any = None
        self.history: list[dict[str, float]] = []
        self.best_val_loss = math.inf
        self._bad_in_a_row = 0
        self._chars = 0  # characters trained on in this run, for the rate
        self._train_time = 0.0

    # --- one step ----------------------------------------------------------------------------

    @property
    def epoch(self) -> float:
        """Passes over the training split done, as a fraction."""
        return self.train.progress

    def done(self) -> bool:
        """Whether max_steps or max_epochs has been reached."""
        c = self.config
        return (c.max_steps is not None and self.step >= c.max_steps) or (
            c.max_epochs is not None and self.epoch >= c.max_epochs
        )

    def train_step(self) -> StepInfo:
        """One batch: forward, backward, the finite check, clipping, the update.

        Raises:
            TrainingDiverged: non-finite gradients with nonfinite="stop", or 10 steps in a row
                skipped with "skip". The parameters are never updated with them.
        """
        t0 = time.perf_counter()
        batch = next(self.train)
        if batch.reset:  # the streams start over: nothing to carry
            self.state = None
        model, c = self.model, self.config
        model.zero_grad()
        loss, state = model.train_step(batch.x, batch.y, self.state)
        group = model.params
        finite = math.isfinite(loss) and grads_finite(group)
        norm = grad_norm(group) if finite else math.nan
        lr = self.schedule(self.step)
        if finite:
            if c.grad_clip > 0:
                if c.clip_mode == "norm":
                    clip_grad_norm(group, c.grad_clip)
                else:
                    clip_grad_value(group, c.grad_clip)
            self.optimizer.lr = lr
            self.optimizer.step()
            self.step += 1
            self.state = state
            self._bad_in_a_row = 0
        else:
            self._bad_in_a_row += 1
            self.state = None  # the carried state may be what went wrong
            if c.nonfinite == "stop" or self._bad_in_a_row >= 10:
                raise TrainingDiverged(
                    f"step {self.step + 1}: the loss or the gradients are not finite "
                    f"(loss {loss}); the parameters were not updated"
                    + ("" if c.nonfinite == "stop" else f" ({self._bad_in_a_row} steps in a row)")
                    + ". Try a lower --lr or --grad-clip, or --dtype float64"
                )
        self._chars += batch.x.size
        self._train_time += time.perf_counter() - t0
        return StepInfo(
            step=self.step,
            epoch=self.epoch,
            loss=float(loss),
            grad_norm=norm,
            lr=lr,
            skipped=not finite,
            chars_per_sec=self._chars / self._train_time if self._train_time > 0 else 0.0,
            elapsed_s=self._train_time,
        )

    def evaluate(self) -> float:
        """Mean validation loss (nats per character) over the whole validation split, with its
        own state from zeros and dropout off: the training state is not touched. NaN without
        a validation split."""
        if self.val is None:
            return math.nan
        total, n, state = 0.0, 0, None
        for batch in self.val.one_pass():
            loss, state = self.model.loss(batch.x, batch.y, state, training=False)
            total += loss * batch.x.size
            n += batch.x.size
        val = total / n
        self.history.append({"step": self.step, "val_loss": val})
        self.best_val_loss = min(self.best_val_loss, val)
        return val

    def run(
        self,
        callback: Callable[[Trainer, StepInfo], bool | None] | None = None,
        *,
        max_steps: int | None = None,
    ) -> None:
        """Train until done() (or `max_steps` more steps, or the callback returns True)."""
        start = self.step
        while not self.done() and (max_steps is None or self.step - start < max_steps):
            info = self.train_step()
            if callback is not None and callback(self, info):
                break

    # --- checkpoints -------------------------------------------------------------------------

    def checkpoint(self, **metrics: Any) -> Checkpoint:
        """Everything needed to continue this run exactly (or to sample from the model)."""
        hidden = self.state
        return Checkpoint(
            weights=self.model.state_dict(),
            config={
                "model": self.model.config,
                "train": self.config.to_dict(),
                "source": self.corpus.source,
            },
            vocab=self.corpus.vocab,
            step=self.step,
            optimizer=self.optimizer.state_dict(),
            data_position=self.train.state_dict(),
            rng={"model": self.model.rnn._rng.bit_generator.state},
            hidden=hidden,
            metrics={"best_val_loss": self.best_val_loss, "history": self.history, **metrics},
        )

    def save(self, path: str | Path, **metrics: Any) -> Path:
        """Write checkpoint() atomically to `path`; returns the path."""
        ckpt = self.checkpoint(**metrics)
        for name, w in ckpt.weights.items():
            # Not reached by training (a step with non-finite gradients is never applied), but
            # weights can be set by hand; save_checkpoint itself refuses them too.
            bad = int(w.size - np.count_nonzero(np.isfinite(w)))
            if bad:
                raise TrainingDiverged(
                    f"Trainer.save: refusing to save non-finite weights to {path}: {name!r} "
                    f"holds {bad} NaN/inf value(s) of {w.size} at step {self.step}; "
                    f"expected finite values only"
                )
        return save_checkpoint(path, ckpt)

    @classmethod
    def resume(cls, path: str | Path, corpus: Corpus, **overrides: Any) -> Trainer:
        """A Trainer continuing the run saved at `path` on the same corpus.

        Args:
            overrides: TrainConfig fields to change for the rest of the run (max_steps,
                max_epochs, lr, ...); the model's shape always comes from the checkpoint.

        Raises:
            CheckpointError: an unusable file. ValueError: the corpus is not the one trained on.
        """
        ckpt = load_checkpoint(path)
        if ckpt.vocab is not None and ckpt.vocab != corpus.vocab:
            raise ValueError(
                f"{path}: the checkpoint's vocabulary ({len(ckpt.vocab)} tokens) is not this "
                f"text's ({len(corpus.vocab)}): resume with the text it was trained on"
            )
        train_cfg = dict(ckpt.config.get("train", {}))
        train_cfg.update(overrides)
        config = TrainConfig.from_dict(train_cfg)
        model = model_from_checkpoint(ckpt)
        trainer = cls(corpus, config, model=model)
        trainer.optimizer.load_state_dict(ckpt.optimizer)
        trainer.step = ckpt.step
        if ckpt.data_position is not None:
            trainer.train.load_state_dict(ckpt.data_position)
        if ckpt.rng and "model" in ckpt.rng:
            model.rnn._rng.bit_generator.state = ckpt.rng["model"]
        trainer.state = ckpt.hidden
        trainer.history = list(ckpt.metrics.get("history", []))
        trainer.best_val_loss = float(ckpt.metrics.get("best_val_loss", math.inf))
        return trainer


def model_from_checkpoint(ckpt: Checkpoint) -> CharRNN:
    """The CharRNN a checkpoint describes, with its weights."""
    cfg = dict(ckpt.config.get("model", {}))
    try:
        vocab_size = cfg.pop("vocab_size")
        dtype = np.dtype(cfg.pop("dtype"))
        model = CharRNN(vocab_size, dtype=dtype, **cfg)
    except (KeyError, TypeError) as e:
        raise ValueError(f"the checkpoint's model configuration is incomplete: {e}") from None
    model.load_state_dict(ckpt.weights)
    return model
