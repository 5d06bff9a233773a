"""Run one variant of configs/looped_tf_picture.yaml (seed 0 by default) through orch's worker, timed: CPU
time, wall time and the load average (1/5/15 min) at the start and the end go to
benchmarks/results/looped_tf_picture.json with the final metrics; ``--report`` renders that file into
benchmarks/results/looped_tf_picture.md (error at every in-context position k = 0 .. 2d).

    .venv/bin/python benchmarks/looped_tf_picture.py looped
    .venv/bin/python benchmarks/looped_tf_picture.py standard
    .venv/bin/python benchmarks/looped_tf_picture.py --report

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


def load_params(variant: str) -> Params:
    import yaml

    from orchestrator.spec.spec import deep_merge, nest
    doc = yaml.safe_load(CONFIG.read_text())
    return Params.model_validate(deep_merge(nest(doc["params"]), nest(doc["variants"][variant])))


def train(variant: str, seed: int) -> None:
    params = load_params(variant)
    path = WORK / f"{variant}_seed{seed}"
    shutil.rmtree(path, ignore_errors=True)  # a fresh run, timed from step 0
    run_dir = RunDir(path)
    run = Run("looped_tf", params.model_dump(mode="json"), seed, "picture")
    run_dir.create({"run": run.to_dict(), "run_id": "local", "experiment_id": "0", "cpus": 1, "gpus": 0})
    load, started = os.getloadavg(), time.strftime("%Y-%m-%d %H:%M:%S")
    cpu, wall = time.process_time(), time.monotonic()
    status = worker.execute(run_dir.path)
    entry = {"status": status, "seed": seed, "cpu_s": time.process_time() - cpu, "wall_s": time.monotonic() - wall,
             "load_start": load, "load_end": os.getloadavg(), "started": started,
             "ended": time.strftime("%Y-%m-%d %H:%M:%S"), "params": params.model_dump(mode="json")}
    records, _ = read_journal(run_dir.journal)
    ends = [r for r in records if r["event"] == "end"]
    entry["final"] = ends[-1].get("final", {}) if ends else {}
    doc = json.loads(OUT.read_text()) if OUT.exists() else {"config": "configs/looped_tf_picture.yaml", "runs": {}}
    doc["runs"][variant] = entry
    OUT.write_text(json.dumps(doc, indent=1))
    print(status, {k: entry[k] for k in ("cpu_s", "wall_s", "load_start", "load_end")})


def fmt(x: float) -> str:
    return f"{x:.3f}" if abs(x) >= 0.01 else f"{x:.1e}"


def report() -> None:
    doc = json.loads(OUT.read_text())
    runs = doc["runs"]
    n = runs["looped"]["params"]["n_points"] if "looped" in runs else next(iter(runs.values()))["params"]["n_points"]
    ks = range(n)
    lines = ["# looped_tf: the picture preset (configs/looped_tf_picture.yaml)", "",
             "Written by `benchmarks/looped_tf_picture.py --report` from `looped_tf_picture.json`. Seed 0, one thread,",
             "squared error / d at in-context position k, mean over the evaluation prompts.", "",
             "| | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * n]
    ls = None
    for variant, entry in runs.items():
        f, p = entry["final"], entry["params"]
        if variant == "looped" or p["model"] == "looped":
            lines.append(f"| looped L={p['n_layer']} (b={p['n_loops']}, T={p['loop_window']}), {int(f['headline_loops'])} loops | "
                         + " | ".join(fmt(f[f"err_k{k}"]) for k in ks) + " |")
            lines.append(f"| looped, b = {p['n_loops']} loops | " + " | ".join(fmt(f[f"err_k{k}_loops{p['n_loops']}"]) for k in ks) + " |")
        else:
            lines.append(f"| standard, {p['n_layer']} layers | " + " | ".join(fmt(f[f"err_k{k}"]) for k in ks) + " |")
        ls = f
    if ls is not None:
        lines.append("| least squares | " + " | ".join(fmt(ls[f"ls_err_k{k}"]) for k in ks) + " |")
    lines += ["", "| run | status | CPU-min | wall-min | load avg start (1/5/15) | load avg end | started |", "|---|---|---|---|---|---|---|"]
    for variant, e in runs.items():
        la = "/".join(f"{x:.2f}" for x in e["load_start"])
        lb = "/".join(f"{x:.2f}" for x in e["load_end"])
        lines.append(f"| {variant} | {e['status']} | {e['cpu_s'] / 60:.1f} | {e['wall_s'] / 60:.1f} | {la} | {lb} | {e['started']} |")
    (OUT.with_suffix(".md")).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", nargs="?", choices=["looped", "standard"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", action="store_true", help="render the results file, train nothing")
    args = parser.parse_args()
    if args.report:
        report()
    elif args.variant:
        train(args.variant, args.seed)
    else:
        parser.error("give a variant or --report")


if __name__ == "__main__":
    main()
