"""Error curves: normalised squared error at every in-context position k, with a bootstrap interval.

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


def plot_curves(curves: dict[str, Curve], n_dims: int, title: str, path: Path) -> None:
    """Error vs k with bands: the model (and its extra-loop curves) against the three baselines."""
    import matplotlib
    matplotlib.use("Agg")  # no display on a compute node
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {"ls": ("least squares", "k", "--"), "knn": ("3-NN", "tab:green", ":"), "avg": ("averaging", "tab:red", "-.")}
    for name, c in curves.items():
        label, color, line = styles.get(name, (name, None, "-"))
        k = np.arange(len(c.mean))
        ax.plot(k, c.mean, line, color=color, label=label, lw=1.8 if name == "model" else 1.2)
        ax.fill_between(k, c.lo, c.hi, color=ax.lines[-1].get_color(), alpha=0.2, lw=0)
    ax.axvline(n_dims, color="grey", lw=0.8, alpha=0.6)
    top = min(2.2, 1.05 * max(max(c.hi) for c in curves.values()))  # 3-NN starts near 2: do not let it squash the rest
    ax.set(xlabel="in-context examples k", ylabel="squared error / d", title=title, ylim=(0, top))
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
