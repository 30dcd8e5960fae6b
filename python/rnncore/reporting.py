"""What a training run reports, and the command line's way of printing it.

Trainer.fit() keeps the policy of a run (when to evaluate, sample, save and stop) and tells a
Reporter what happened; the Reporter decides what, if anything, to show. The base class shows
nothing (a silent run, e.g. in a test); ConsoleReporter prints what ``rnncore train`` prints:
a one-line progress bar on a terminal, plain log lines otherwise, and a loss plot on request.
A notebook can subclass Reporter to draw its own.

Events of one fit(), in order::

    start(trainer, total, time_limit)
    { log | skipped | sample | evaluated | time_limit }*      after training steps
    close()                                                   the run has stopped, however
    end(trainer, result)                                      result.status says how
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from .train import StepInfo, Trainer, TrainingDiverged

__all__ = ["ConsoleReporter", "FitResult", "Progress", "Reporter", "format_duration", "write_plot"]


@dataclass
class FitResult:
    """How a Trainer.fit() run ended and what it measured.

    status: "done" (max_steps / max_epochs reached), "time_limit", "interrupted" (Ctrl-C or
    KeyboardInterrupt; saved to checkpoint) or "diverged" (error holds the TrainingDiverged).
    train_curve: (step, mean training loss of a log window); val_curve: (step, val loss),
    with the evaluations of the earlier runs of a resumed Trainer.
    """

    status: Literal["done", "time_limit", "interrupted", "diverged"] = "done"
    step: int = 0  # optimizer steps done
    epoch: float = 0.0  # passes over the training split
    best_val_loss: float = math.inf
    elapsed_s: float = 0.0  # wall-clock seconds of the fit(), evaluations included
    checkpoint: str | Path | None = None  # where the run saves (None: it does not)
    train_curve: list[tuple[int, float]] = field(default_factory=list)
    val_curve: list[tuple[int, float]] = field(default_factory=list)
    error: TrainingDiverged | None = None


class Reporter:
    """The events of a Trainer.fit() run; every method does nothing here."""

    def start(self, trainer: Trainer, total: int | None, time_limit: float | None) -> None:
        """Before the first step. total: the step the run ends at (None: unknown);
        time_limit: minutes, or None."""

    def log(self, info: StepInfo, train_loss: float, val_loss: float | None, eta_s: float) -> None:
        """Every log_every steps: the window's mean training loss, the last validation loss
        (None: none yet) and the estimated seconds left (NaN: unknown)."""

    def skipped(self, info: StepInfo) -> None:
        """A step whose gradients were not finite was skipped (info.step: steps applied)."""

    def sample(self, step: int, text: str) -> None:
        """A sample drawn from the model after `step` steps."""

    def evaluated(self, trainer: Trainer, val_loss: float, result: FitResult) -> None:
        """After an evaluation (val_loss NaN without a validation split) and the save to
        result.checkpoint; result's curves are up to date."""

    def time_limit(self, step: int, minutes: float) -> None:
        """The time limit was reached after `step` steps (evaluated and saved already)."""

    def close(self) -> None:
        """The run has stopped (normally or not): finish any partial output."""

    def end(self, trainer: Trainer, result: FitResult) -> None:
        """Last: how the run ended (result.status) and where it stands."""


def format_duration(seconds: float) -> str:
    """``m:ss`` or ``h:mm:ss``; ``?`` for an unknown (non-finite) duration."""
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """A one-line progress bar on a terminal, plain log lines otherwise."""

    def __init__(self, out: IO[str], total: int | None, tty: bool) -> None:
        self.out, self.total, self.tty = out, total, tty
        self._shown = False

    def update(self, info: StepInfo, train_loss: float, val_loss: float | None, eta: float) -> None:
        val = f"{val_loss:.4f}" if val_loss is not None else "-"
        text = (
            f"step {info.step}{f'/{self.total}' if self.total else ''}  epoch {info.epoch:.2f}  "
            f"loss {train_loss:.4f}  val {val}  {info.chars_per_sec:,.0f} chars/s  "
            f"ETA {format_duration(eta)}"
        )
        if self.tty:
            frac = info.step / self.total if self.total else 0.0
            width = 24
            filled = round(width * min(1.0, frac))
            bar = "#" * filled + "-" * (width - filled)
            self.out.write(f"\r[{bar}] {text}\x1b[K")
            self._shown = True
        else:
            self.out.write(text + "\n")
        self.out.flush()

    def message(self, text: str) -> None:
        if self._shown:
            self.out.write("\r\x1b[K")
            self._shown = False
        self.out.write(text.rstrip("\n") + "\n")
        self.out.flush()

    def close(self) -> None:
        if self._shown:
            self.out.write("\n")
            self._shown = False
        self.out.flush()


def write_plot(path: str, train: list[tuple[int, float]], val: list[tuple[int, float]]) -> None:
    """A PNG of the training and validation curves (needs matplotlib), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train", lw=1)
    if val:
        ax.plot(*zip(*val, strict=True), label="validation", lw=2, marker="o", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per character)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


class ConsoleReporter(Reporter):
    """What ``rnncore train`` prints, to `out`.

    Args:
        out: the text stream (standard output).
        tty: a progress bar redrawn in place (True) or one log line per report (False).
        plot: a PNG path rewritten at every evaluation and at the end; None: no plot.
    """

    def __init__(self, out: IO[str], *, tty: bool, plot: str | None = None) -> None:
        self.out, self.tty, self.plot = out, tty, plot
        self.progress = Progress(out, None, tty)

    def start(self, trainer: Trainer, total: int | None, time_limit: float | None) -> None:
        self.progress = Progress(self.out, total, self.tty)
        c = trainer.config
        until = [f"step {c.max_steps}"] if c.max_steps else []
        until += [f"epoch {c.max_epochs:g}"] if c.max_epochs else []
        until += [f"{time_limit:g} minutes"] if time_limit else []
        resumed = trainer.resumed_at
        self.progress.message(
            f"{trainer.corpus!r}\n{trainer.model!r}\n"
            f"{trainer.train.batches_per_epoch} batches of {c.batch_size}x{c.seq_length} per "
            f"epoch; {c.optimizer} lr {c.lr:g}; training to "
            + " or ".join(until)
            + (f" (resumed at step {resumed})" if resumed is not None else "")
        )

    def log(self, info: StepInfo, train_loss: float, val_loss: float | None, eta_s: float) -> None:
        self.progress.update(info, train_loss, val_loss, eta_s)

    def skipped(self, info: StepInfo) -> None:
        self.progress.message(f"step {info.step + 1}: non-finite gradients, step skipped")

    def sample(self, step: int, text: str) -> None:
        self.progress.message(f"--- sample at step {step} ---\n{text}\n---")

    def evaluated(self, trainer: Trainer, val_loss: float, result: FitResult) -> None:
        saved = f"; saved {result.checkpoint}" if result.checkpoint is not None else ""
        self.progress.message(
            f"step {trainer.step}: val loss {val_loss:.4f} (best {trainer.best_val_loss:.4f})"
            + saved
        )
        if self.plot:
            write_plot(self.plot, result.train_curve, result.val_curve)

    def time_limit(self, step: int, minutes: float) -> None:
        self.progress.message(f"time limit of {minutes:g} minutes reached at step {step}")

    def close(self) -> None:
        self.progress.close()

    def end(self, trainer: Trainer, result: FitResult) -> None:
        path = result.checkpoint
        if result.status == "interrupted":
            saved = f": checkpoint saved to {path}" if path is not None else ""
            self.out.write(f"interrupted at step {result.step}{saved}\n")
        elif result.status == "diverged":
            self.out.write(f"stopped: {result.error}\n")
        else:
            elapsed = result.elapsed_s
            self.out.write(
                f"done: step {result.step}, epoch {result.epoch:.2f}, best val loss "
                f"{result.best_val_loss:.4f}, {format_duration(elapsed)} ({elapsed:.0f} s)"
                + (f"; checkpoint {path}\nsample from it: rnncore sample {path}" if path else "")
                + "\n"
            )
            if self.plot:
                write_plot(self.plot, result.train_curve, result.val_curve)
                self.out.write(f"plot: {self.plot}\n")
        self.out.flush()
