"""Learning-rate schedules: the rate as a pure function of the step (rnncore.optim re-exports
LRSchedule)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from .checks import int_at_least, is_int, number

__all__ = ["LRSchedule"]


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate as a function of the step: stateless, so resuming needs only the step.

    ``schedule(step)`` is the rate for the update that follows `step` completed updates
    (0 for the first), after an optional linear warmup:

    - warmup: steps 0..warmup_steps-1 use lr · (step + 1) / warmup_steps;
    - "none": lr;
    - "step": lr · factor^k, k = max(0, step - after) // every: multiplied by `factor` at steps
      after + every, after + 2·every, ... (char-rnn: 0.97 every epoch after 10 epochs;
      torch-rnn: 0.5 every 5 epochs; convert epochs to steps with batches per epoch);
    - "cosine": from lr down to min_lr along half a cosine between the end of the warmup and
      total_steps, then min_lr.

    Args:
        lr: the base learning rate (> 0).
        decay: "none", "step" or "cosine".
        factor: the step decay's multiplier, in (0, 1].
        every: steps between two step decays (>= 1).
        after: steps before the step decay begins (>= 0).
        total_steps: the cosine schedule's length (required for "cosine").
        min_lr: the cosine schedule's final rate, in [0, lr].
        warmup_steps: length of the linear warmup (0: none).
    """

    lr: float
    decay: Literal["none", "step", "cosine"] = "none"
    factor: float = 0.5
    every: int = 1
    after: int = 0
    total_steps: int | None = None
    min_lr: float = 0.0
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        w = "LRSchedule"
        number(w, "lr", self.lr, low=0.0, low_ok=False)
        if self.decay not in ("none", "step", "cosine"):
            raise ValueError(f"{w}: decay must be 'none', 'step' or 'cosine', got {self.decay!r}")
        f = number(w, "factor", self.factor, low=0.0, low_ok=False)
        if f > 1:
            raise ValueError(f"{w}: factor must be in (0, 1], got {self.factor!r}")
        for name, low in (("every", 1), ("after", 0), ("warmup_steps", 0)):
            int_at_least(w, name, getattr(self, name), low)
        if not 0 <= number(w, "min_lr", self.min_lr, low=0.0) <= self.lr:
            raise ValueError(f"{w}: min_lr must be in [0, lr = {self.lr}], got {self.min_lr!r}")
        if self.decay == "cosine":
            t = self.total_steps
            if not is_int(t) or t <= self.warmup_steps:
                raise ValueError(
                    f"{w}: decay='cosine' needs total_steps, an int > warmup_steps "
                    f"({self.warmup_steps}), got {t!r}"
                )

    def __call__(self, step: int) -> float:
        """The learning rate for the update after `step` completed updates (step >= 0)."""
        if step < 0:
            raise ValueError(f"LRSchedule: step must be >= 0, got {step}")
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.decay == "step":
            return self.lr * self.factor ** (max(0, step - self.after) // self.every)
        if self.decay == "cosine":
            assert self.total_steps is not None
            span = self.total_steps - self.warmup_steps
            progress = min(1.0, (step - self.warmup_steps) / span)
            return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
        return self.lr
