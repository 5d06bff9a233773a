"""Error curves: normalised squared error at every in-context position k, with a bootstrap interval
(plots.py draws them).

Normalised = squared error divided by d, so that predicting 0 scores about 1 (E[(w.x)^2] = d) and every
curve reads on the same scale whatever d is. The interval is Garg et al.'s: the 5th and 95th percentiles
of the mean over prompts resampled with replacement."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass
class Curve:
    mean: list[float]  # one value per k = 0 .. n-1 (k = number of labelled points seen)
    lo: list[float]
    hi: list[float]


def normalised_errors(preds: torch.Tensor, ys: torch.Tensor, n_dims: int) -> np.ndarray:
    """(P, n) squared errors / d, as float64 numpy."""
    return ((preds.double().cpu() - ys.double().cpu()).square() / n_dims).numpy()


def curve(errors: np.ndarray, rng: np.random.Generator, trials: int = 1000) -> Curve:
    """Mean over prompts and its bootstrap 90% interval. Resampling is done with multinomial counts, so
    the cost is one (trials, P) x (P, n) product instead of a (trials, P, n) gather."""
    p = errors.shape[0]
    counts = rng.multinomial(p, np.full(p, 1.0 / p), size=trials)
    means = np.sort(counts @ errors / p, axis=0)
    lo, hi = means[int(0.05 * trials)], means[min(int(0.95 * trials), trials - 1)]
    return Curve(errors.mean(0).tolist(), lo.tolist(), hi.tolist())


def write_curves(curves: dict[str, Curve], meta: dict, path: Path) -> None:
    path.write_text(json.dumps({"meta": meta, "curves": {k: asdict(c) for k, c in curves.items()}}, indent=1))
