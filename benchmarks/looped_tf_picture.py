"""Run one variant of configs/looped_tf_picture.yaml (seed 0 by default) through orch's worker, timed: CPU
time, wall time and the load average (1/5/15 min) at the start and the end go to
benchmarks/results/looped_tf_picture.json with the final metrics; ``--report`` renders that file into
benchmarks/results/looped_tf_picture.md (error at every in-context position k = 0 .. 2d) and, from the runs
named after the preset's variants, benchmarks/results/looped_tf_picture.png (error vs k, log scale).

    .venv/bin/python benchmarks/looped_tf_picture.py looped
    .venv/bin/python benchmarks/looped_tf_picture.py standard
    .venv/bin/python benchmarks/looped_tf_picture.py --report

``--set KEY=VALUE`` (repeatable; dotted keys, YAML values, e.g. ``--set loop_window=12 --set steps=6000``)
overrides the variant's params, and ``--name`` stores the run under another name than the variant's, so
that tried settings stay in the results beside the preset's own runs.

One thread (the preset's resources.cpus); run one at a time on a shared machine."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from orchestrator.job import worker
from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run
from workloads.looped_tf import Params

ROOT = Path(__file__).resolve().parent
CONFIG = ROOT.parent / "configs" / "looped_tf_picture.yaml"
OUT = ROOT / "results" / "looped_tf_picture.json"
WORK = Path(os.environ.get("LOOPED_TF_WORK", "/tmp/looped_tf_picture"))


def load_params(variant: str, sets: list[str] | None = None) -> Params:
    import yaml

    from orchestrator.spec.spec import apply_sets, deep_merge, nest

    doc = yaml.safe_load(CONFIG.read_text())
    merged = deep_merge(nest(doc["params"]), nest(doc["variants"][variant]))
    return Params.model_validate(apply_sets({"params": merged}, sets or [])["params"])


def train(variant: str, seed: int, name: str | None = None, sets: list[str] | None = None) -> None:
    params = load_params(variant, sets)
    overrides = dict(item.split("=", 1) for item in sets or [])  # as given, for the report
    name = name or variant
    path = WORK / f"{name}_seed{seed}"
    shutil.rmtree(path, ignore_errors=True)  # a fresh run, timed from step 0
    run_dir = RunDir(path)
    run = Run("looped_tf", params.model_dump(mode="json"), seed, "picture")
    run_dir.create({"run": run.to_dict(), "run_id": "local", "experiment_id": "0", "cpus": 1, "gpus": 0})
    load, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M:%S")
    cpu, wall = time.process_time(), time.monotonic()
    status = worker.execute(run_dir.path)
    entry = {
        "status": status,
        "variant": variant,
        "overrides": overrides,
        "seed": seed,
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.monotonic() - wall,
        "load_start": load,
        "load_end": os.getloadavg(),
        "started": started,
        "ended": time.strftime("%Y-%m-%d %H:%M:%S"),
        "params": params.model_dump(mode="json"),
    }
    records, _ = read_journal(run_dir.journal)
    ends = [r for r in records if r["event"] == "end"]
    entry["final"] = ends[-1].get("final", {}) if ends else {}
    doc = json.loads(OUT.read_text()) if OUT.exists() else {"config": "configs/looped_tf_picture.yaml", "runs": {}}
    doc["runs"][name] = entry
    OUT.write_text(json.dumps(doc, indent=1))
    print(status, {k: entry[k] for k in ("cpu_s", "wall_s", "load_start", "load_end")})


def fmt(x: float) -> str:
    return f"{x:.3f}" if abs(x) >= 0.01 else f"{x:.1e}"


def report() -> None:
    doc = json.loads(OUT.read_text())
    runs = doc["runs"]
    n = next(iter(runs.values()))["params"]["n_points"]
    ks = range(n)
    lines = [
        "# looped_tf: the picture preset (configs/looped_tf_picture.yaml)",
        "",
        "Written by `benchmarks/looped_tf_picture.py --report` from `looped_tf_picture.json`. Seed 0, one thread,",
        "squared error / d at in-context position k, mean over the evaluation prompts. A run named other than",
        "its variant is the variant with the overrides listed in the second table (`--set`).",
        "",
        "| run | model | " + " | ".join(f"k={k}" for k in ks) + " |",
        "|---|---|" + "---|" * n,
    ]
    ls = None
    for name, entry in runs.items():
        f, p = entry["final"], entry["params"]
        if p["model"] == "looped":
            model = f"looped L={p['n_layer']}, b={p['n_loops']}, T={p['loop_window']}"
            lines.append(
                f"| {name} | {model}, {int(f['headline_loops'])} loops | "
                + " | ".join(fmt(f[f"err_k{k}"]) for k in ks)
                + " |"
            )
            if int(f["headline_loops"]) != p["n_loops"]:
                lines.append(
                    f"| {name} | {model}, {p['n_loops']} loops | "
                    + " | ".join(fmt(f[f"err_k{k}_loops{p['n_loops']}"]) for k in ks)
                    + " |"
                )
        else:
            lines.append(
                f"| {name} | standard, {p['n_layer']} layers | " + " | ".join(fmt(f[f"err_k{k}"]) for k in ks) + " |"
            )
        ls = f
    if ls is not None:
        lines.append("| | least squares | " + " | ".join(fmt(ls[f"ls_err_k{k}"]) for k in ks) + " |")
    lines += [
        "",
        "| run | variant | overrides | status | CPU-min | wall-min | load avg start (1/5/15) | load avg end | started "
        "|",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, e in runs.items():
        la = "/".join(f"{x:.2f}" for x in e["load_start"])
        lb = "/".join(f"{x:.2f}" for x in e["load_end"])
        over = ", ".join(f"{k}={v}" for k, v in e.get("overrides", {}).items()) or "-"
        lines.append(
            f"| {name} | {e.get('variant', name)} | {over} | {e['status']} | {e['cpu_s'] / 60:.1f} | "
            f"{e['wall_s'] / 60:.1f} | {la} | {lb} | {e['started']} |"
        )
    (OUT.with_suffix(".md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if "looped" in runs and "standard" in runs:
        plot(runs["looped"], runs["standard"], OUT.with_suffix(".png"))


def plot(looped: dict, standard: dict, path: Path) -> None:
    """The paper's Figure 2 at this scale: error by in-context position, the preset's two models and
    least squares (exact from k = d on: drawn at the plot's floor)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, p = looped["final"], looped["params"]
    ks = list(range(p["n_points"]))
    floor = 1e-4
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(
        ks,
        [f[f"err_k{k}"] for k in ks],
        "o-",
        label=f"looped L={p['n_layer']}, b={p['n_loops']}, T={p['loop_window']}, {int(f['headline_loops'])} loops",
    )
    ax.plot(ks, [f[f"err_k{k}_loops{p['n_loops']}"] for k in ks], "o:", label=f"looped, b = {p['n_loops']} loops")
    s = standard["final"]
    ax.plot(ks, [s[f"err_k{k}"] for k in ks], "s-", label=f"standard, {standard['params']['n_layer']} layers")
    ax.plot(ks, [max(f[f"ls_err_k{k}"], floor) for k in ks], "k--", label="least squares (floor: exact)")
    ax.axvline(p["n_dims"], color="grey", lw=0.8)
    ax.set_xticks(ks)
    ax.set(
        yscale="log",
        ylim=(floor / 2, 2),
        xlabel="in-context examples k",
        ylabel="squared error / d",
        title=f"d = {p['n_dims']}, seed 0, one CPU thread",
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", nargs="?", choices=["looped", "standard"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a param of the variant (dotted keys, YAML values); repeatable",
    )
    parser.add_argument("--name", help="store the run under this name (default: the variant)")
    parser.add_argument("--report", action="store_true", help="render the results file, train nothing")
    args = parser.parse_args()
    if args.report:
        report()
    elif args.variant:
        train(args.variant, args.seed, args.name, args.sets)
    else:
        parser.error("give a variant or --report")


if __name__ == "__main__":
    main()
