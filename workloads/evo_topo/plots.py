"""Artifacts of a run: fitness curve, adjacency heatmaps of the best W and W_in, the PCA view of neurons by
their connection vectors (as the lab did), the best genome as .npz. matplotlib's Agg backend: no display."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from workloads.evo_topo.genome import split  # noqa: E402

POS_CUE = [f"pos{i}" for i in range(4)] + [f"cue{i}" for i in range(4)]
INPUT_LABELS = [f"s1 {x}" for x in POS_CUE] + [f"s2 {x}" for x in POS_CUE]


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


def adjacency(g: np.ndarray, path: Path, title: str) -> None:
    W, W_in = split(g)
    lim = max(float(np.abs(g).max()), 1e-12)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5), constrained_layout=True,
                             gridspec_kw={"width_ratios": [max(W.shape[1], 1), W_in.shape[1]]})
    for ax, m, name in ((axes[0], W, "W (row = into neuron)"), (axes[1], W_in, "W_in")):
        im = ax.imshow(m, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest", aspect="auto")
        ax.set(title=name, ylabel="neuron")
    axes[1].set_xticks(range(len(INPUT_LABELS)), INPUT_LABELS, rotation=90, fontsize=7)
    fig.colorbar(im, ax=axes, shrink=0.8)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def neuron_pca(g: np.ndarray, path: Path, title: str) -> None:
    """Each neuron as its connection vector [incoming W row, outgoing W column, W_in row], projected on
    the first two principal components."""
    W, W_in = split(g)
    vectors = np.concatenate([W, W.T, W_in], axis=1)
    centred = vectors - vectors.mean(axis=0)
    fig, ax = plt.subplots(figsize=(6, 5), constrained_layout=True)
    if len(vectors) >= 2:
        u, s, vt = np.linalg.svd(centred, full_matrices=False)
        proj = centred @ vt[:2].T if vt.shape[0] >= 2 else np.c_[centred @ vt[:1].T, np.zeros(len(vectors))]
        explained = s**2 / max(float((s**2).sum()), 1e-12)
        points = ax.scatter(proj[:, 0], proj[:, 1], c=np.abs(W_in).sum(1), cmap="viridis")
        fig.colorbar(points, ax=ax, shrink=0.8, label="input drive: sum |W_in| of the neuron")
        for i, (x, y) in enumerate(proj):
            ax.annotate(str(i), (x, y), fontsize=7)
        ax.set(xlabel=f"PC1 ({explained[0]:.0%})",
               ylabel=f"PC2 ({explained[1]:.0%})" if len(explained) > 1 else "PC2")
    else:
        ax.text(0.5, 0.5, "one neuron: nothing to project", ha="center", transform=ax.transAxes)
    ax.set_title(title)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_genome(g: np.ndarray, path: Path, **meta) -> None:
    W, W_in = split(g)
    np.savez_compressed(path, W=W, W_in=W_in, **{k: np.asarray(v) for k, v in meta.items()})
