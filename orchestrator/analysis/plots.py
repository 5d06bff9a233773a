"""The two pictures of a comparison (matplotlib, Agg: no display on a cluster's login node):
every seed's final value per group (points over a box), and each group's learning curve across seeds
(mean line, interval band)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

COLORS = plt.get_cmap("tab10").colors  # type: ignore[attr-defined]  # a ListedColormap


def _chance_line(ax, level: float | None) -> None:
    """The level a random guess scores (the workload's declaration): a group on it has learned nothing."""
    if level is not None:
        ax.axhline(level, color="tab:red", ls=":", lw=1.2, label=f"chance ({level:g})", zorder=1)
        ax.legend(loc="best", fontsize=8)


def _wrap(label: str, width: int = 18) -> str:
    return label if len(label) <= width else label.replace(", ", ",\n")


def final_metric(report, path: Path) -> Path:
    """Strip plot over a box plot, one column per group; the baseline's column is shaded, and each
    group's mean with its t-interval is drawn beside its points."""
    groups = report.groups
    fig, ax = plt.subplots(figsize=(max(4.5, 1.3 * len(groups) + 2), 4.2), dpi=120)
    rng = np.random.default_rng(0)  # jitter only: seeded so the picture is the same every time
    for i, g in enumerate(groups):
        x = i + 1
        values = np.asarray(g.values, dtype=float)
        values = values[np.isfinite(values)]
        color = COLORS[i % len(COLORS)]
        if g.name == report.baseline:
            ax.axvspan(x - 0.45, x + 0.45, color="0.92", zorder=0)
        if len(values) > 1:
            ax.boxplot(
                [values],
                positions=[x],
                widths=0.5,
                showfliers=False,
                manage_ticks=False,
                medianprops={"color": "0.3"},
                boxprops={"color": "0.55"},
                whiskerprops={"color": "0.55"},
                capprops={"color": "0.55"},
            )
        ax.scatter(
            x - 0.08 + rng.uniform(-0.1, 0.1, len(values)),
            values,
            s=22,
            color=color,
            alpha=0.85,
            edgecolor="white",
            linewidth=0.5,
            zorder=3,
        )
        s = g.summary
        if s is not None and s.mean is not None:
            if s.ci_low is not None:
                ax.errorbar(
                    x + 0.3,
                    s.mean,
                    yerr=[[s.mean - s.ci_low], [s.ci_high - s.mean]],
                    fmt="D",
                    color="black",
                    markersize=4,
                    capsize=3,
                    zorder=4,
                )
            else:
                ax.plot(x + 0.3, s.mean, "D", color="black", markersize=4, zorder=4)
    ax.set_xticks(
        range(1, len(groups) + 1),
        [
            _wrap(g.name) + ("\n(baseline)" if g.name == report.baseline else "") + f"\nn={len(g.values)}"
            for g in groups
        ],
    )
    better = "lower" if report.mode == "min" else "higher"
    ax.set_ylabel(report.metric)
    ax.set_title(
        f"{report.experiment}: {report.metric} per seed ({better} is better)\n"
        f"box: quartiles; diamond: mean and {round(report.confidence * 100)}% t-interval",
        fontsize=9,
    )
    ax.grid(axis="y", alpha=0.3)
    ax.set_xlim(0.4, len(groups) + 0.6)
    _chance_line(ax, report.chance_level)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def curves(report, path: Path) -> Path | None:
    """Mean of the per-step metric across seeds, with its t-interval as a band, one line per group."""
    drawn = [(i, g) for i, g in enumerate(report.groups) if g.curve and g.curve.steps]
    if not drawn:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for i, g in drawn:
        c = g.curve
        steps = np.asarray(c.steps)
        nan = float("nan")
        mean = np.array([nan if v is None else v for v in c.mean])
        low = np.array([nan if v is None else v for v in c.low])
        high = np.array([nan if v is None else v for v in c.high])
        color = COLORS[i % len(COLORS)]
        ax.plot(steps, mean, color=color, label=f"{g.name} (n={max(c.n)})", linewidth=1.6)
        ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("step")
    ax.set_ylabel(report.curve_metric)
    ax.set_title(
        f"{report.experiment}: {report.curve_metric} across seeds (mean, {round(report.confidence * 100)}% t-interval)",
        fontsize=9,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _chance_line(ax, report.chance.get(report.curve_metric or ""))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _band(ax, curve, color, label: str) -> None:
    nan = float("nan")
    steps = np.asarray(curve.steps)
    ax.plot(steps, [nan if v is None else v for v in curve.mean], color=color, label=label, linewidth=1.4)
    low = [nan if v is None else v for v in curve.low]
    high = [nan if v is None else v for v in curve.high]
    ax.fill_between(steps, low, high, color=color, alpha=0.2, linewidth=0)


def all_curves(curves, report, path: Path) -> Path | None:
    """`--curves`: one panel per per-step metric, one line per group (mean over its seeds on the steps
    every seed logged) with its t-interval band."""
    metrics = curves.metrics
    if not metrics:
        return None
    cols = min(3, len(metrics))
    rows = (len(metrics) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), dpi=110, squeeze=False)
    order = {g.name: i for i, g in enumerate(report.groups)}
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for name, curve in curves.curves[metric].items():
            _band(ax, curve, COLORS[order.get(name, 0) % len(COLORS)], f"{name} (n={max(curve.n)})")
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(
        f"{report.experiment}: mean across seeds, {round(report.confidence * 100)}% t-interval band", fontsize=10
    )
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def performance_profile(aggregate, experiment: str, path: Path) -> Path:
    """rliable's performance profile: per group, the fraction of its run-scores (every run of every metric,
    each metric scaled to [0, 1]) above each threshold, with its stratified bootstrap band."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    taus = np.asarray(aggregate.taus)
    for i, g in enumerate(aggregate.groups):
        if not g.profile:
            continue
        color = COLORS[i % len(COLORS)]
        iqm = "" if g.iqm is None else f", IQM {g.iqm:.2f}"
        ax.plot(taus, g.profile, color=color, label=f"{g.name}{iqm}", linewidth=1.6)
        ax.fill_between(taus, g.profile_low, g.profile_high, color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel("normalized score threshold (1 = the best value seen of each metric)")
    ax.set_ylabel("fraction of runs x metrics above it")
    ax.set_title(f"{experiment}: performance profiles over {', '.join(aggregate.metrics)}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
