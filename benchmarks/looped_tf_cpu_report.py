"""The CPU results of benchmarks/looped_tf_cpu_preset.py as one Markdown table, beside the reference's
published numbers (d = 20, 41 points; Figures_LR.ipynb of Leiay/looped_transformer).

    .venv/bin/python benchmarks/looped_tf_cpu_report.py

Reads benchmarks/results/looped_tf_cpu_preset_{looped,standard}[_smoke|_latest].json, writes
benchmarks/results/looped_tf_cpu_preset.md. The reference's positions k = 10, 19, 20, 40 are d/2, d-1, d and
2d at d = 20; the CPU presets' counterparts at d = 5 are k = 2 (nearest to d/2 = 2.5), 4, 5 and 10."""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
KS = (2, 4, 5, 10)
REFERENCE = {  # d = 20, 41 points, at k = 10, 19, 20, 40
    "12-layer transformer": ("0.519", "0.059", "0.020", "4.8e-4"),
    "looped L=1 (the notebook evaluates its b=20, T=15 checkpoint at 500 loops)": ("0.519", "0.060", "0.024", "7.8e-4"),
    "least squares": ("0.515", "0.048", "1.5e-9", "~0"),
}


def fmt(x: float) -> str:
    return f"{x:.3f}" if abs(x) >= 0.01 else f"{x:.1e}"


def load(x: list[float]) -> str:
    return "/".join(f"{v:.1f}" for v in x)


def evaluations(variant: str) -> list[dict]:
    """The variant's evaluations, fewest trained steps first: the smoke snapshot, the latest checkpoint of an
    unfinished run, and the 12k run's own end when it finished."""
    out = []
    for which in ("smoke", "latest"):
        path = RESULTS / f"looped_tf_cpu_preset_{variant}_{which}.json"
        if path.exists():
            entry = json.loads(path.read_text())["evaluation"]
            if entry.get("metrics"):
                out.append(entry)
    run = RESULTS / f"looped_tf_cpu_preset_{variant}.json"
    if run.exists():
        doc = json.loads(run.read_text())
        if doc.get("final_12k"):
            last = doc["slices"][-1]
            out.append({"trained_steps": 12000, "metrics": doc["final_12k"], "load_start": last["load_start"]})
    return sorted(out, key=lambda e: e["trained_steps"])


def rows_for(variant: str) -> list[list[str]]:
    rows = []
    for entry in evaluations(variant):
        m, steps, at = entry["metrics"], f"{entry['trained_steps']:,}", load(entry["load_start"])
        if variant == "looped":
            loops = int(m["headline_loops"])
            rows.append(
                [f"looped L=1 (b=10, T=5), {loops} loops (final_err)", steps]
                + [fmt(m[f"err_k{k}"]) for k in KS]
                + [f"{int(m['converge_step']):,}", at]
            )
            rows.append(
                ["looped L=1 (b=10, T=5), b = 10 loops (final_err_b)", steps]
                + [fmt(m[f"err_k{k}_loops10"]) for k in KS]
                + ["", ""]
            )
        else:
            rows.append(
                ["4-layer transformer", steps]
                + [fmt(m[f"err_k{k}"]) for k in KS]
                + [f"{int(m['converge_step']):,}", at]
            )
        rows.append(["least squares (same prompts)", ""] + [fmt(m[f"ls_err_k{k}"]) for k in KS] + ["", ""])
    return rows


def main() -> None:
    header = ["model", "trained steps", *(f"k={k}" for k in KS), "converge_step", "load avg at eval (1/5/15)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for variant in ("looped", "standard"):
        lines += ["| " + " | ".join(r) + " |" for r in rows_for(variant)]
    ref = ["| reference (d = 20, 41 points) | k=10 | k=19 | k=20 | k=40 |", "|---|---|---|---|---|"]
    ref += [f"| {name} | " + " | ".join(v) + " |" for name, v in REFERENCE.items()]
    text = (
        "# looped_tf on CPU (d = 5, 11 points) beside the reference (d = 20, 41 points)\n\n"
        "Squared error / d at in-context position k (labelled points seen), mean over 1,280 prompts, seed 0.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(ref)
        + "\n"
    )
    (RESULTS / "looped_tf_cpu_preset.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
