"""How fast orch's everyday commands answer, as a fresh process each, on an experiment of 500 runs.

An experiment of 2 variants x 250 seeds of `smoke` is recorded as FINISHED through orch's own submission
steps (the MLflow runs and run directories of a real submit; the workload itself is not run), then each
command is timed as a real subprocess, best of ``--repeat``:

- `orch --help`                          target <= 0.3 s
- `orch status EXP` (500 runs)           target <= 1.0 s
- `orch submit SPEC` with nothing to run target <= 1.5 s
- the other read commands, each target <= 1.5 s: `orch status --where`, `orch status --runs`, `orch ls`,
  `orch logs RUN`, `orch compare EXP --no-log`
- the peer: the same 500 runs listed by MLflow itself (`MlflowClient().search_runs`, a fresh process),
  which is what a command built on MLflow's client pays; orch's status is reported as a ratio to it.

The machine's load average is printed beside the numbers (wall times stretch with it).

Usage: python benchmarks/command_latency.py [--seeds 250] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
ORCH = [sys.executable, "-m", "orchestrator"]
PEER = (
    "import sys; from mlflow.tracking import MlflowClient; c = MlflowClient(sys.argv[1]); "
    "e = c.get_experiment_by_name('latency'); runs = c.search_runs([e.experiment_id], max_results=5000); "
    "print(len(runs))"
)


def record_finished(spec_path: Path, uri: str) -> tuple[int, str]:
    """The runs of the spec as orch's submit creates them, marked FINISHED with a final metric without running
    the workload; and one seed run's id."""
    import random

    from mlflow.entities import Metric

    from orchestrator import api, driver, groups

    sub = api.plan_submission(spec_path, tracking_uri=uri)
    reconciled = sub.reconcile()
    assert sub.ledger is not None
    experiment_id = sub.ledger.experiment_id(sub.spec.name, create=True)
    prepared = driver.prepare(sub.ledger, experiment_id, sub.spec, reconciled.todo, "local")
    draw = random.Random(0)
    for item in prepared:
        value = draw.gauss(0.5 + float(item.run.params.get("offset", 0.0)), 0.05)
        sub.ledger.client.log_batch(item.run_id, metrics=[Metric("final_loss", value, 0, 0)])
        sub.ledger.set_status(item.run_id, "FINISHED")
    groups.update_groups(sub.ledger, experiment_id)
    assert sub.lock is not None
    sub.lock.release()  # held since reconcile (launch() would release it): the timed submit would wait on it
    return len(prepared), prepared[0].run_id


def best_of(cmd: list[str], repeat: int, cwd: Path) -> float:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        times.append(time.perf_counter() - began)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="orch-latency-") as tmp:
        root = Path(tmp)
        uri = f"sqlite:///{root / 'mlflow.db'}"
        spec = {
            "name": "latency",
            "workload": "smoke",
            "params": {"steps": 1},
            "seeds": args.seeds,
            "workdir": str(root / "jobs"),
            "variants": {"a": {}, "b": {"offset": 0.1}},
        }
        spec_path = root / "spec.yaml"
        spec_path.write_text(yaml.safe_dump(spec))
        began = time.perf_counter()
        runs, run_id = record_finished(spec_path, uri)
        at = ["--tracking-uri", uri]
        setup_s = time.perf_counter() - began
        load_before = os.getloadavg()
        rows = [
            ("orch --help", best_of([*ORCH, "--help"], args.repeat, root), 0.3),
            (
                f"orch status ({runs} runs)",
                best_of([*ORCH, "status", "latency", "--tracking-uri", uri], args.repeat, root),
                1.0,
            ),
            (
                "orch submit, nothing to run",
                best_of([*ORCH, "submit", str(spec_path), "--tracking-uri", uri], args.repeat, root),
                1.5,
            ),
            (
                "orch status --where",
                best_of([*ORCH, "status", "latency", "--where", "params.offset > 0.05", *at], args.repeat, root),
                1.5,
            ),
            ("orch status --runs", best_of([*ORCH, "status", "latency", "--runs", *at], args.repeat, root), 1.5),
            ("orch ls", best_of([*ORCH, "ls", *at], args.repeat, root), 1.5),
            ("orch logs RUN", best_of([*ORCH, "logs", run_id, *at], args.repeat, root), 1.5),
            ("orch compare --no-log", best_of([*ORCH, "compare", "latency", "--no-log", *at], args.repeat, root), 1.5),
            (
                f"peer: MLflow search_runs ({runs} runs)",
                best_of([sys.executable, "-c", PEER, uri], args.repeat, root),
                None,
            ),
        ]
        load_after = os.getloadavg()
    status_s, peer_s = rows[1][1], rows[-1][1]
    table = Table(
        title=f"command latency, fresh process each, best of {args.repeat}; load average "
        f"{load_before[0]:.2f} -> {load_after[0]:.2f} ({os.cpu_count()} cores)"
    )
    for col in ("command", "wall (s)", "target (s)", "meets it"):
        table.add_column(col, justify="left" if col == "command" else "right")
    for name, seconds, target in rows:
        table.add_row(
            name,
            f"{seconds:.2f}",
            f"{target:.1f}" if target else "-",
            ("yes" if seconds <= target else "no") if target else "-",
        )
    console = Console()
    console.print(table)
    console.print(
        f"orch status / MLflow's own listing of the same runs: {status_s / peer_s:.2f}x "
        f"({runs} runs recorded in {setup_s:.0f} s)"
    )
    RESULTS.mkdir(exist_ok=True)
    result = {
        "runs": runs,
        "repeat": args.repeat,
        "load_average": [load_before[0], load_after[0]],
        "rows": [{"command": n, "wall_s": round(s, 3), "target_s": t} for n, s, t in rows],
        "status_over_peer": round(status_s / peer_s, 3),
    }
    (RESULTS / "command_latency.json").write_text(json.dumps(result, indent=1))
    with open(RESULTS / "command_latency.md", "w") as f:
        Console(file=f, width=110).print(table)
        f.write(f"\norch status / MLflow's own listing: {status_s / peer_s:.2f}x\n")


if __name__ == "__main__":
    main()
