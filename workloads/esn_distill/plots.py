"""Artifacts: the per-layer table (JSON and Markdown) and a bar chart ESN vs the three baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SERIES = (
    ("nmse", "ESN"),
    ("baseline_identity_nmse", "identity"),
    ("baseline_mean_nmse", "mean"),
    ("baseline_linear_nmse", "linear ridge"),
)


def write_table(rows: list[dict], final: dict, out_dir: Path) -> None:
    (out_dir / "layers.json").write_text(json.dumps({"layers": rows, "final": final}, indent=2))
    cols = [
        "layer",
        "nmse",
        "r2",
        "cosine",
        "mse",
        "baseline_identity_nmse",
        "baseline_mean_nmse",
        "baseline_linear_nmse",
        "chained_nmse",
        "ridge",
    ]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |")
    (out_dir / "layers.md").write_text("\n".join(lines) + "\n")


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def bar_chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = np.array([r["layer"] for r in rows])
    width = 0.8 / len(SERIES)
    fig, ax = plt.subplots(figsize=(max(6, 0.7 * len(rows) + 2), 4))
    for k, (key, label) in enumerate(SERIES):
        ax.bar(layers + (k - (len(SERIES) - 1) / 2) * width, [r[key] for r in rows], width, label=label)
    if rows and "chained_nmse" in rows[0]:
        ax.plot(layers, [r["chained_nmse"] for r in rows], "k.--", label="ESN chained")
    ax.set_xlabel("layer i (predicting hidden_states[i+1] from hidden_states[i])")
    ax.set_ylabel("held-out normalised MSE (log)")
    ax.set_yscale("log")  # identity ranges over orders of magnitude, the fitted maps sit far below 1
    ax.set_xticks(layers)
    ax.legend(fontsize=8)
    ax.set_title("Reservoir BERT: per-layer distillation")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
