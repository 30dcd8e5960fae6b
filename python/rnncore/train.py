"""Training a character-level language model: truncated BPTT over char-rnn batches.

A Trainer owns the model, the optimizer, the two batch iterators and the hidden state carried
from one training batch to the next (reset only where the data wraps). Validation runs over
the whole validation split with a state of its own, so it never disturbs the training state.
Everything a run needs to continue exactly is in its checkpoint: N steps straight and N/2
steps, a save, a resume and N/2 more give the same parameters (bitwise with one thread).

Two levels of driving it:

- ``fit()``: a whole run with the policy of ``rnncore train`` (evaluate and save every N
  steps, samples, a time limit, a metrics file, Ctrl-C saving a checkpoint), reporting through a
  Reporter (rnncore.reporting; the command line's prints a progress bar or log lines); the
  policy itself is rnncore.fit.FitRun.
- ``run()`` / ``train_step()`` / ``evaluate()`` / ``save()``: the pieces, for a loop of one's own.

With ``comm`` (an mpi4py communicator) it trains data-parallel over the ranks
(rnncore.distributed, docs/distributed.md); without one nothing changes.

Typical use::

    corpus = load_corpus()                             # tiny-shakespeare
    trainer = Trainer(corpus, TrainConfig(max_steps=2000))
    result = trainer.fit(checkpoint="run.npz", eval_every=500)   # silent; or
    trainer.run(callback=lambda t, info: print(info.step, info.loss))
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .checks import flag, int_at_least, number
from .config import TrainConfig
from .data import Corpus, make_batch_iterators
from .distributed import Distributed
from .model import CharRNN
from .optim import (
    LRSchedule,
    clip_grad_norm,
    clip_grad_value,
    grad_norm,
    grads_finite,
    make_optimizer,
)
from .reporting import FitResult, Reporter
from .sample import sample_stream

__all__ = ["FitResult", "StepInfo", "TrainConfig", "Trainer", "TrainingDiverged"]


class TrainingDiverged(RuntimeError):
    """Non-finite gradients (or loss) with ``nonfinite="stop"``: the step was not applied."""


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
        comm: an mpi4py communicator: data-parallel training over its ranks, each on batch_size
            / N of the streams (docs/distributed.md); None: this process alone.

    Attributes:
        model, optimizer, schedule, train, val (batch iterators; val None without a split),
        step (optimizer steps done), state (the hidden state carried to the next batch),
        history (dicts of step, val_loss: every evaluation), best_val_loss, resumed_at (the
        step a Trainer.resume() started from; None for a new run), dist (a Distributed, or
        None without comm).
    """

    def __init__(
        self, corpus: Corpus, config: TrainConfig, *, model: CharRNN | None = None, comm: Any = None
    ):
        self.corpus, self.config = corpus, config
        c = config
        self.train, self.val = make_batch_iterators(
            corpus, c.batch_size, c.seq_length, val_fraction=c.val_fraction
        )
        self.dist = None if comm is None else Distributed(comm)
        if self.dist is not None:  # this rank's streams of the same batches
            self.train, self.val = self.dist.shard_batches(self.train, self.val, c.batch_size)
        V = len(corpus.vocab)
        if model is None:
            model = CharRNN.from_config(c, V)
        elif model.vocab_size != V:
            raise ValueError(
                f"Trainer: the model predicts {model.vocab_size} tokens but the corpus has {V}"
            )
        self.model = model
        if self.dist is not None:
            self.dist.start(model, c.seed)
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
        self.resumed_at: int | None = None
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
        if self.dist is not None:  # every replica takes the update of the global batch
            loss = self.dist.allreduce_gradients(group, loss)
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
        self._chars += batch.x.size * (1 if self.dist is None else self.dist.size)
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
        if self.dist is not None:  # each rank evaluated its streams
            total, n = self.dist.reduce_validation(self.model.params, total, n, step=self.step)
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

    def sample(self, length: int = 200, *, seed: int | None = None) -> str:
        """A sample of the model at temperature 1 with `seed`: `length` characters after a
        newline (or, without one in the vocabulary, after a drawn first token, included), as
        text (a bytes vocabulary is decoded as UTF-8 with replacement)."""
        stream = sample_stream(
            self.model, self.corpus.vocab, length=length, seed=seed, temperature=1.0
        )
        return "".join(p if isinstance(p, str) else p.decode("utf-8", "replace") for p in stream)

    def fit(
        self,
        reporter: Reporter | None = None,
        *,
        checkpoint: str | Path | None = None,
        eval_every: int = 200,
        sample_every: int = 1000,
        sample_length: int = 200,
        log_every: int = 10,
        time_limit: float | None = None,
        metrics: str | Path | None = None,
        handle_sigint: bool = True,
    ) -> FitResult:
        """Train until done(), the time limit or Ctrl-C, with the policy of ``rnncore train``.

        Args:
            reporter: receives every event (rnncore.reporting.Reporter; None: silent).
            checkpoint: saved at every evaluation, at the end and on Ctrl-C; None: never.
            eval_every: steps between evaluations (each followed by a save); 0: only at the
                end (and at the time limit).
            sample_every, sample_length: steps between samples (seeded with the step; 0:
                never) and their length in characters.
            log_every: steps between reported mean training losses (and metrics records).
            time_limit: minutes after which the run evaluates, saves and stops; None: none.
            metrics: a JSON-lines file appended with a record per log (step, epoch,
                train_loss, lr, chars_per_sec, elapsed_s) and per evaluation (val_loss too).
            handle_sigint: (main thread) the first Ctrl-C lets the step in progress finish,
                then saves and stops; a second interrupts at once, still saving the last
                whole step. Either way, a KeyboardInterrupt saves and stops.

        Returns:
            A FitResult (how the run ended, its curves). Neither Ctrl-C nor divergence is
            raised: the Trainer stays usable and resumable.
        """
        from .fit import FitRun  # here: fit.py imports this module

        where = "Trainer.fit"
        if self.dist is not None and not self.dist.is_root:
            reporter, metrics = None, None  # with comm, rank 0 alone reports and writes
        reporter = reporter if reporter is not None else Reporter()
        run = FitRun(
            self,
            reporter,
            checkpoint=checkpoint,
            eval_every=int_at_least(where, "eval_every", eval_every, 0),
            sample_every=int_at_least(where, "sample_every", sample_every, 0),
            sample_length=int_at_least(where, "sample_length", sample_length, 1),
            log_every=int_at_least(where, "log_every", log_every, 1),
            time_limit=None
            if time_limit is None
            else number(where, "time_limit", time_limit, low=0.0, low_ok=False),
        )
        handle_sigint = flag(where, "handle_sigint", handle_sigint)
        return run.run(metrics, handle_sigint=handle_sigint)

    # --- checkpoints -------------------------------------------------------------------------

    def checkpoint(self, **metrics: Any) -> Checkpoint:
        """Everything needed to continue this run exactly (or to sample from the model).
        With comm, collective: on rank 0 the state of every stream and every rank's generator."""
        hidden = self.state
        rng = {"model": self.model.rnn.generator.bit_generator.state}
        if self.dist is not None:
            hidden, rng = self.dist.checkpoint_parts(self.model, hidden, step=self.step)
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
            rng=rng,
            hidden=hidden,
            metrics={"best_val_loss": self.best_val_loss, "history": self.history, **metrics},
        )

    def save(self, path: str | Path, **metrics: Any) -> Path:
        """Write checkpoint() atomically to `path`; returns the path. With comm: collective,
        rank 0 writes, and every rank returns once the file is written (or raises if not)."""
        ckpt = self.checkpoint(**metrics)
        if self.dist is not None:
            return self.dist.on_root(self.write_checkpoint, path, ckpt)
        return self.write_checkpoint(path, ckpt)

    def write_checkpoint(self, path: str | Path, ckpt: Checkpoint) -> Path:
        """Write a checkpoint of this run (e.g. checkpoint()) atomically to `path`."""
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
    def resume(
        cls, path: str | Path, corpus: Corpus, *, comm: Any = None, **overrides: Any
    ) -> Trainer:
        """A Trainer continuing the run saved at `path` on the same corpus.

        Args:
            comm: as Trainer's; exact with the number of ranks that saved the run, the same
                data position and state with another (docs/distributed.md).
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
        trainer = cls(corpus, config, model=model, comm=comm)
        trainer.optimizer.load_state_dict(ckpt.optimizer)
        trainer.step = ckpt.step
        if ckpt.data_position is not None:
            trainer.train.load_state_dict(ckpt.data_position)
        if ckpt.rng and "model" in ckpt.rng:
            model.rnn.generator.bit_generator.state = ckpt.rng["model"]
        trainer.state = ckpt.hidden
        if trainer.dist is not None:
            trainer.state = trainer.dist.resume(
                model, ckpt.rng, ckpt.hidden, seed=config.seed, step=ckpt.step
            )
        trainer.resumed_at = trainer.step
        trainer.history = list(ckpt.metrics.get("history", []))
        trainer.best_val_loss = float(ckpt.metrics.get("best_val_loss", math.inf))
        return trainer


def model_from_checkpoint(ckpt: Checkpoint) -> CharRNN:
    """The CharRNN a checkpoint describes, with its weights."""
    try:
        model = CharRNN.from_config(ckpt.config.get("model", {}))
    except (KeyError, TypeError) as e:
        raise ValueError(f"the checkpoint's model configuration is incomplete: {e}") from None
    model.load_state_dict(ckpt.weights)
    return model
