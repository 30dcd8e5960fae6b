"""The policy of Trainer.fit() (and so of ``rnncore train``): one run's evaluations,
checkpoints, samples, time limit, metrics file and Ctrl-C, around Trainer.run().
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from pathlib import Path
from typing import IO, Any

from .reporting import FitResult, Reporter
from .train import StepInfo, Trainer, TrainingDiverged

__all__ = ["FitRun"]


class FitRun:
    """One Trainer.fit() run: its options, its state between steps and its metrics file.

    With comm (Trainer.dist), the decisions that end the run (Ctrl-C, the time limit) are
    taken by all ranks together at one step boundary (Distributed.agree), so every rank
    evaluates and saves after the same step; Ctrl-C never interrupts a rank mid-step.
    """

    def __init__(
        self,
        trainer: Trainer,
        reporter: Reporter,
        *,
        checkpoint: str | Path | None,
        eval_every: int,
        sample_every: int,
        sample_length: int,
        log_every: int,
        time_limit: float | None,
    ) -> None:
        self.trainer, self.reporter = trainer, reporter
        self.checkpoint, self.time_limit = checkpoint, time_limit
        self.eval_every, self.sample_every = eval_every, sample_every
        self.sample_length, self.log_every = sample_length, log_every
        c = trainer.config
        self.total = c.max_steps  # the progress bar's end; None: unknown
        if self.total is None and c.max_epochs:
            self.total = math.ceil(c.max_epochs * trainer.train.batches_per_epoch)
        self.result = FitResult(
            checkpoint=checkpoint,
            val_curve=[(int(h["step"]), float(h["val_loss"])) for h in trainer.history],
        )
        self.last_val: float | None = self.result.val_curve[-1][1] if trainer.history else None
        self.window: list[float] = []  # training losses since the last log
        self.metrics_file: IO[str] | None = None
        self.interrupted = False
        self.start_step, self.start_time = trainer.step, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start_time

    def run(self, metrics: str | Path | None, *, handle_sigint: bool) -> FitResult:
        t, result = self.trainer, self.result
        self.reporter.start(t, self.total, self.time_limit)
        self.metrics_file = open(metrics, "a", encoding="utf-8") if metrics else None
        self.start_step, self.start_time = t.step, time.perf_counter()
        install = handle_sigint and threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, self.on_sigint) if install else None
        try:
            t.run(self.callback)
            if self.stopping():
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            result.status = "interrupted"
            if self.checkpoint is not None:
                t.save(self.checkpoint)
        except TrainingDiverged as e:
            result.status, result.error = "diverged", e
        finally:
            if install:
                signal.signal(signal.SIGINT, previous)
            self.reporter.close()
            if self.metrics_file is not None:
                self.metrics_file.close()
        result.step, result.epoch, result.best_val_loss = t.step, t.epoch, t.best_val_loss
        result.elapsed_s = self.elapsed()
        self.reporter.end(t, result)
        return result

    def on_sigint(self, signum: int, frame: Any) -> None:
        if self.interrupted and self.trainer.dist is None:  # with comm: never mid-step
            raise KeyboardInterrupt
        self.interrupted = True

    def stopping(self) -> bool:
        """Ctrl-C was pressed (with comm: on some rank, as of the last step's allreduce)."""
        d = self.trainer.dist
        return self.interrupted if d is None else d.agree("interrupt", self.interrupted)

    def callback(self, t: Trainer, info: StepInfo) -> bool | None:
        if self.stopping():  # Ctrl-C during the step: stop before reporting it
            return True
        return self.after_step(info) or self.stopping()

    def after_step(self, info: StepInfo) -> bool:
        """Log, sample, evaluate and save as due after a step; True: the time is up."""
        t, reporter = self.trainer, self.reporter
        if info.skipped:
            reporter.skipped(info)
            return False
        self.window.append(info.loss)
        s = info.step
        if s % self.log_every == 0 or t.done():
            mean = sum(self.window) / len(self.window)
            self.window.clear()
            self.result.train_curve.append((s, mean))
            rate = (s - self.start_step) / max(1e-9, self.elapsed())
            eta = (self.total - s) / rate if self.total and rate > 0 else math.nan
            if self.time_limit:  # whichever ends first
                left = 60 * self.time_limit - self.elapsed()
                eta = left if math.isnan(eta) else min(eta, left)
            reporter.log(info, mean, self.last_val, eta)
            self.record(info, mean, None)
        if self.sample_every and s % self.sample_every == 0:
            reporter.sample(s, t.sample(self.sample_length, seed=s))
        out_of_time = self.time_limit is not None and self.elapsed() >= 60 * self.time_limit
        if t.dist is not None:  # the ranks' clocks differ: stop together
            out_of_time = t.dist.agree("time_limit", out_of_time)
        if (self.eval_every and s % self.eval_every == 0) or t.done() or out_of_time:
            self.evaluate_and_save(info)
        if out_of_time:
            self.result.status = "time_limit"
            reporter.time_limit(s, self.time_limit)
        return out_of_time

    def evaluate_and_save(self, info: StepInfo) -> None:
        t = self.trainer
        val = self.last_val = t.evaluate()
        if math.isfinite(val):
            self.result.val_curve.append((t.step, val))
        if self.checkpoint is not None:
            t.save(self.checkpoint)
        self.record(info, None, val if math.isfinite(val) else None)
        self.result.best_val_loss = t.best_val_loss
        self.reporter.evaluated(t, val, self.result)

    def record(self, info: StepInfo, train_loss: float | None, val_loss: float | None) -> None:
        """One metrics line (when there is a metrics file)."""
        if self.metrics_file is None:
            return
        row: dict[str, Any] = {
            "step": info.step,
            "epoch": round(info.epoch, 6),
            "train_loss": train_loss,
            "lr": info.lr,
            "chars_per_sec": round(info.chars_per_sec, 1),
            "elapsed_s": round(self.elapsed(), 3),
        }
        if val_loss is not None:
            row["val_loss"] = val_loss
        self.metrics_file.write(json.dumps(row) + "\n")
        self.metrics_file.flush()
