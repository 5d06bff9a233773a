"""Artifacts of a run: fitness curve, adjacency heatmaps of the winner's W and [W_in | bias] as run, the PCA
view of neurons by their connection vectors (as the lab did), the winner as .npz. matplotlib's Agg backend:
no display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from workloads.evo_topo.nets import Net

POS_CUE = [f"pos{i}" for i in range(4)] + [f"cue{i}" for i in range(4)]
INPUT_LABELS = [f"s1 {x}" for x in POS_CUE] + [f"s2 {x}" for x in POS_CUE] + ["bias"]


def fitness_curve(history: list[dict], path: Path, title: str) -> None:
    gens = np.arange(len(history))
    best = np.array([h["best_fitness"] for h in history])
    mean = np.array([h["mean_fitness"] for h in history])
    std = np.array([h["std_fitness"] for h in history])
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    ax.plot(gens, best, label="best")
    ax.plot(gens, mean, label="mean")
    ax.fill_between(gens, mean - std, mean + std, alpha=0.2, label="mean +- std")
    ax.axhline(0.25, color="grey", ls=":", lw=1, label="chance")
    ax.set(xlabel="generation", ylabel="validation accuracy", title=title, ylim=(0, 1.02))
    ax.legend(loc="lower right")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def adjacency(net: Net, path: Path, title: str) -> None:
    """Each panel on its own colour scale: W is rescaled to a small spectral radius, W_in is not."""
    W, W_in = net.W, np.c_[net.W_in, net.bias]
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(10, 4.5),
        constrained_layout=True,
        gridspec_kw={"width_ratios": [max(W.shape[1], 1), W_in.shape[1]]},
    )
    for ax, m, name in ((axes[0], W, "W (row = into neuron)"), (axes[1], W_in, "W_in | bias")):
        lim = max(float(np.abs(m).max(initial=0)), 1e-12)
        im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest", aspect="auto")
        ax.set(title=name, ylabel="neuron")
        fig.colorbar(im, ax=ax, shrink=0.8)
    axes[1].set_xticks(range(len(INPUT_LABELS)), INPUT_LABELS, rotation=90, fontsize=7)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def neuron_pca(net: Net, path: Path, title: str) -> None:
    """Each neuron as its connection vector [incoming W row, outgoing W column, W_in row], projected on
    the first two principal components (the lab's view of an evolved topology), with W's edges drawn
    between the neurons: positive red, negative blue, the width by |weight|."""
    W, W_in = net.W, net.W_in
    vectors = np.concatenate([W, W.T, W_in], axis=1)
    centred = vectors - vectors.mean(axis=0)
    fig, ax = plt.subplots(figsize=(6, 5), constrained_layout=True)
    if len(vectors) >= 2:
        _u, s, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[:2].T if vt.shape[0] >= 2 else np.c_[centred @ vt[:1].T, np.zeros(len(vectors))]
        explained = s**2 / max(float((s**2).sum()), 1e-12)
        scale = max(float(np.abs(W).max(initial=0)), 1e-12)
        for i, j in zip(*np.nonzero(W), strict=False):  # W[i, j]: from neuron j into neuron i
            ax.annotate(
                "",
                proj[i],
                proj[j],
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": "tab:red" if W[i, j] > 0 else "tab:blue",
                    "alpha": 0.5,
                    "lw": 0.4 + 1.6 * abs(W[i, j]) / scale,
                    "shrinkA": 4,
                    "shrinkB": 4,
                },
                zorder=1,
            )
        ax.plot([], [], color="tab:red", label="positive edge")
        ax.plot([], [], color="tab:blue", label="negative edge")
        ax.legend(loc="best", fontsize=7)
        points = ax.scatter(proj[:, 0], proj[:, 1], c=np.abs(W_in).sum(1), cmap="viridis", zorder=2)
        fig.colorbar(points, ax=ax, shrink=0.8, label="input drive: sum |W_in| of the neuron")
        for i, (x, y) in enumerate(proj):
            ax.annotate(str(i), (x, y), fontsize=7)
        ax.set(xlabel=f"PC1 ({explained[0]:.0%})", ylabel=f"PC2 ({explained[1]:.0%})" if len(explained) > 1 else "PC2")
    else:
        ax.text(0.5, 0.5, "one neuron: nothing to project", ha="center", transform=ax.transAxes)
    ax.set_title(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_net(net: Net, path: Path, **extra) -> None:
    """The winner as run (W, W_in, bias), plus ``extra`` arrays (the genome, the test scores, ...)."""
    arrays: dict[str, Any] = {"W": net.W, "W_in": net.W_in, "bias": net.bias}
    arrays.update({k: np.asarray(v) for k, v in extra.items()})
    np.savez_compressed(path, **arrays)
