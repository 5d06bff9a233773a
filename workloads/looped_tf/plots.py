"""The run's figures (matplotlib, no display): error vs k against the baselines, error vs loop count
(loop_err) and error vs the number of state pairs kept (the mask sweep)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from workloads.looped_tf.evaluate import Curve


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on a compute node
    import matplotlib.pyplot as plt

    return plt


def plot_curves(curves: dict[str, Curve], n_dims: int, title: str, path: Path) -> None:
    """Error vs k with bands: the model (and its other loop-count curves) against the three baselines."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    styles = {
        "ls": ("least squares", "k", "--"),
        "knn": ("3-NN", "tab:green", ":"),
        "avg": ("averaging", "tab:red", "-."),
    }
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


def plot_loop_err(by_loop: np.ndarray, ks: list[int], b: int, window: int, title: str, path: Path) -> None:
    """Error vs loop count 1..N, one line per k, log-log (the interesting part is near b, the tail runs to
    the horizon); the training b is marked, and the iterations the loss covered shaded."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    loops = np.arange(1, by_loop.shape[0] + 1)
    for k in ks:
        ax.plot(loops, np.maximum(by_loop[:, k], 1e-12), lw=1.4, label=f"k = {k}")
    ax.axvline(b, color="k", lw=1.0, ls="--", label=f"training b = {b}")
    ax.axvspan(max(1, b - window + 1), b, color="grey", alpha=0.15, lw=0, label=f"loss window T = {min(window, b)}")
    ax.set(xscale="log", yscale="log", xlabel="loop iterations", ylabel="squared error / d", title=title)
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_mask_sweep(sweep: dict[str, dict[int, float]], unmasked: float, loops: int, title: str, path: Path) -> None:
    """Error at the last position vs N, the pairs of the state kept, one line per side (first / last)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for side, errs in sweep.items():
        ns = sorted(errs)
        ax.plot(ns, [errs[n] for n in ns], "o-", lw=1.4, label=f"keep the {side} N pairs")
    ax.axhline(unmasked, color="k", lw=1.0, ls="--", label="final_err (no sweep mask)")
    ax.set(
        yscale="log",
        xlabel="N (pairs of the state kept)",
        ylabel=f"squared error / d at the last k, {loops} loops",
        title=title,
    )
    ax.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
