"""Convergence speed from the logged training loss: the first logged step at which the loss is within 10%
of its final plateau (the lab's measure for looped models with L > 1). The plateau is the mean of the last
10% of the logged windows; each window is already a mean over ``log_every`` steps, which smooths the
step-to-step noise of fresh batches."""

from __future__ import annotations

import numpy as np


def plateau(losses: list[float], tail: float = 0.1) -> float:
    """Mean of the last ``tail`` fraction of the values (at least one)."""
    n = max(1, round(tail * len(losses)))
    return float(np.mean(losses[-n:]))


def convergence_step(history: list[tuple[int, float]], within: float = 0.1, tail: float = 0.1) -> int:
    """The first step whose loss is <= (1 + within) x the plateau. ``history`` holds (step, loss) pairs in
    step order. The smallest loss of the tail is at most the tail's mean, so some step always qualifies."""
    if not history:
        raise ValueError("no logged loss to find a plateau in")
    level = (1 + within) * plateau([loss for _, loss in history], tail)
    return next(step for step, loss in history if loss <= level)
