"""Cost of the Ray backend and of `orch tune`, against the local backend measured in the same run.

1. `orch submit` of N smoke runs (20 steps, no sleep) on the local backend (the peer), then on a local Ray
   (ray.init counted separately): the per-run overhead of a Ray task versus a forked process.
2. A tune sweep of N smoke trials (random search, fifo, 2 at a time), with Tune's actor reuse on (orch's
   setting) and off: what reusing the trial processes saves.

    .venv/bin/python benchmarks/ray_tune.py [--runs 8]
Writes benchmarks/results/ray_tune.{json,md}. Timings depend on the machine's load: compare ratios."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))


def submit(root: Path, name: str, backend: str, runs: int) -> float:
    from typer.testing import CliRunner

    from orchestrator.cli import app

    spec = root / f"{name}.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "workload": "smoke",
                "params": {"steps": 20},
                "seeds": runs,
                "backend": backend,
                "workdir": str(root / "jobs"),
                "resources": {"cpus": 1, "mem_gb": 0.5},
            }
        )
    )
    start = time.perf_counter()
    result = CliRunner().invoke(app, ["submit", str(spec), "--tracking-uri", f"sqlite:///{root / 'm.db'}"])
    assert result.exit_code == 0, result.output
    return time.perf_counter() - start


def sweep(root: Path, name: str, trials: int, reuse: bool) -> float:
    import orchestrator.tune.sweep as tune_mod

    spec = root / f"{name}.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "workload": "smoke",
                "params": {"steps": 20},
                "workdir": str(root / "jobs"),
                "resources": {"cpus": 1, "mem_gb": 0.5},
                "tune": {
                    "report": "loss",
                    "num_samples": trials,
                    "max_concurrent": 2,
                    "space": {"offset": {"uniform": [0.0, 1.0]}},
                },
            }
        )
    )
    original = tune_mod._tune_config

    def with_reuse(config):
        tc = original(config)
        tc.reuse_actors = reuse
        return tc

    tune_mod._tune_config = with_reuse
    try:
        start = time.perf_counter()
        result = tune_mod.run_sweep(
            spec, tracking_uri=f"sqlite:///{root / 'm.db'}", best_path=None, echo=lambda *a: None
        )
        assert sum(r.status == "FINISHED" for r in result.rows) == trials
        return time.perf_counter() - start
    finally:
        tune_mod._tune_config = original


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=8)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="orch-bench-ray-", dir="/tmp"))
    os.environ.setdefault("RAY_TMPDIR", str(root / "ray"))
    os.environ.setdefault("RAY_AUTH_TOKEN_PATH", str(root / "auth_token"))
    try:
        rows = []
        from orchestrator.tracking.ledger import Ledger  # the MLflow store exists before anything is timed

        Ledger(f"sqlite:///{root / 'm.db'}").client.search_experiments()
        local_s = submit(root, "bench_local", "local", args.runs)
        rows.append(("submit, local backend (peer)", args.runs, local_s, 1.0))
        from orchestrator.backends.ray_connect import connect
        from orchestrator.backends.ray_settings import RaySettings

        start = time.perf_counter()
        ray = connect(None, RaySettings(num_cpus=os.cpu_count()))
        init_s = time.perf_counter() - start
        rows.append(("ray.init (local Ray)", 0, init_s, init_s / local_s))
        ray_s = submit(root, "bench_ray", "ray", args.runs)
        rows.append(("submit, ray backend", args.runs, ray_s, ray_s / local_s))
        reuse_s = sweep(root, "bench_tune_reuse", args.runs, True)
        rows.append(("tune sweep, actor reuse (orch)", args.runs, reuse_s, reuse_s / local_s))
        fresh_s = sweep(root, "bench_tune_fresh", args.runs, False)
        rows.append(("tune sweep, a process per trial", args.runs, fresh_s, fresh_s / local_s))
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    table = Table(title=f"Ray backend and orch tune: {args.runs} smoke runs/trials (20 steps), {os.cpu_count()} cores")
    for col in ("what", "runs", "wall s", "s per run", "x local"):
        table.add_column(col, justify="left" if col == "what" else "right")
    for what, n, secs, ratio in rows:
        table.add_row(what, str(n), f"{secs:.1f}", f"{secs / n:.2f}" if n else "-", f"{ratio:.2f}")
    Console().print(table)
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    data = {
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg": os.getloadavg(),
        "rows": [dict(zip(("what", "runs", "wall_s", "x_local"), r, strict=False)) for r in rows],
    }
    (out / "ray_tune.json").write_text(json.dumps(data, indent=1))
    md = ["| what | runs | wall s | s per run | x local |", "|---|---|---|---|---|"]
    md += [f"| {w} | {n} | {s:.1f} | {(s / n if n else 0):.2f} | {r:.2f} |" for w, n, s, r in rows]
    (out / "ray_tune.md").write_text(
        f"# Ray backend and orch tune ({args.runs} smoke runs, {os.cpu_count()} cores, load "
        f"{os.getloadavg()[0]:.1f})\n\n" + "\n".join(md) + "\n"
    )


if __name__ == "__main__":
    main()
