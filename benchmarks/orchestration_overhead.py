"""Orchestration overhead of orch's local backend, and reconcile time of a large spec.

1. 200 runs of `smoke` (steps: 1) through `orch submit` (a real subprocess of the `orch` entry script, as
   users run it; store created beforehand) against the same 200 workload calls in a plain Python loop:
   per-run overhead in ms, the submission's fixed costs (start-up, MLflow's import, aggregates) included.
2. Plan + reconcile of a 2,000-run spec whose runs all exist in MLflow already: seconds.
Targets: <= 50 ms per run, < 2 s for the 2,000-run reconcile. The machine's load average is printed
beside the numbers: on a shared machine wall times stretch with it (CPU times do not).

Usage: python benchmarks/orchestration_overhead.py [--runs 200] [--reconcile-runs 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
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
ENTRY = Path(sys.executable).with_name("orch")
ORCH = [str(ENTRY)] if ENTRY.exists() else [sys.executable, "-m", "orchestrator"]


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def plain_loop(n: int, tmp: Path) -> float:
    """The same workload calls with nothing around them but a RunContext writing a journal."""
    from orchestrator.job.context import RunContext
    from orchestrator.job.journal import JournalWriter
    from orchestrator.job.rundir import RunDir
    from workloads import smoke

    params = smoke.Params(steps=1, noise=0.0)
    start = time.perf_counter()
    for seed in range(n):
        run_dir = RunDir(tmp / f"loop{seed}")
        run_dir.path.mkdir(parents=True)
        journal = JournalWriter(run_dir.journal)
        smoke.run(params, RunContext(seed, run_dir, journal))
        journal.close()
    return time.perf_counter() - start


def submit_overhead(n: int, tmp: Path) -> dict:
    from orchestrator.tracking.ledger import Ledger

    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    Ledger(uri)  # the store's one-time creation (schema migrations) is not per-run overhead
    spec = tmp / "overhead.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "overhead",
                "workload": "smoke",
                "params": {"steps": 1, "noise": 0.0},
                "seeds": n,
                "workdir": str(tmp / "jobs"),
            }
        )
    )
    loop_s = plain_loop(n, tmp / "loop")
    cpu0, load0 = children_cpu(), os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(
        [*ORCH, "submit", str(spec), "--tracking-uri", uri],
        check=True,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    submit_s = time.perf_counter() - start
    span_s = runs_span(tmp / "jobs" / "overhead")
    return {
        "runs": n,
        "plain_loop_s": loop_s,
        "orch_submit_s": submit_s,
        "orch_cpu_s": children_cpu() - cpu0,
        "overhead_ms_per_run": (submit_s - loop_s) / n * 1000,
        "runs_span_s": span_s,
        "marginal_ms_per_run": (span_s - loop_s) / n * 1000,
        "fixed_s": submit_s - span_s,
        "load_avg": (load0 + os.getloadavg()[0]) / 2,
    }


def runs_span(workdir: Path) -> float:
    """From the first run's start to the last run's end, as their journals recorded them: the part of
    the submission that grows with the number of runs (the rest is start-up, MLflow's import, the
    experiment's creation and the final aggregates, paid once)."""
    starts, ends = [], []
    for journal in workdir.glob("*/journal.jsonl"):
        records = [json.loads(line) for line in journal.read_text().splitlines()]
        starts.append(records[0]["t"])
        ends.append(records[-1]["t"])
    return max(ends) - min(starts)


def reconcile_time(n: int, tmp: Path) -> dict:
    from orchestrator import driver
    from orchestrator.backends.base import make as make_backend
    from orchestrator.groups import identity_tags
    from orchestrator.spec.plan import expand, flat_params
    from orchestrator.spec.spec import load_spec
    from orchestrator.tracking.ledger import Ledger

    uri = f"sqlite:///{tmp / 'reconcile.db'}"
    spec_path = tmp / "big.yaml"
    spec_path.write_text(
        yaml.safe_dump(
            {
                "name": "big",
                "workload": "smoke",
                "grid": {"offset": list(range(n // 10))},
                "seeds": 10,
                "workdir": str(tmp / "jobs-big"),
            }
        )
    )
    ledger = Ledger(uri)
    spec = load_spec(spec_path)
    runs = expand(spec)
    experiment_id = ledger.experiment_id("big", create=True)
    for run in runs:  # populate: every run already FINISHED
        run_id = ledger.create_run(
            experiment_id,
            run.label,
            {
                "orch.role": "seed",
                "orch.key": run.key,
                "orch.group": run.group,
                "orch.backend": "local",
                **identity_tags(run),
            },  # as orch records them (key scheme 2)
            flat_params(run),
            status="RUNNING",
        )
        ledger.client.set_terminated(run_id, "FINISHED")
    start = time.perf_counter()
    spec = load_spec(spec_path)
    runs = expand(spec)
    records = driver.refresh(ledger, ledger.runs(experiment_id), make_backend)
    reconciled = driver.reconcile(runs, records)
    in_process_s = time.perf_counter() - start
    assert len(reconciled.done) == n and not reconciled.todo, "every run must be found FINISHED"
    start = time.perf_counter()
    out = subprocess.run(
        [*ORCH, "submit", str(spec_path), "--tracking-uri", uri],
        check=True,
        cwd=tmp,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    cli_s = time.perf_counter() - start
    assert "0 to run" in " ".join(out.stdout.split()), out.stdout
    return {"runs": n, "plan_reconcile_s": in_process_s, "orch_submit_cli_s": cli_s, "load_avg": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--reconcile-runs", type=int, default=2000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="orch-bench-"))
    try:
        overhead = submit_overhead(args.runs, tmp)
        reconcile = reconcile_time(args.reconcile_runs, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = Table(title="orch orchestration overhead (local backend, sqlite store)")
    for col in ("measure", "value", "target", "ok"):
        table.add_column(col)
    rows = [
        (f"plain loop, {overhead['runs']} smoke calls", f"{overhead['plain_loop_s']:.2f} s", "", ""),
        (f"orch submit, {overhead['runs']} runs (wall)", f"{overhead['orch_submit_s']:.2f} s", "", ""),
        ("orch submit CPU (all processes)", f"{overhead['orch_cpu_s']:.2f} s", "", ""),
        (
            "overhead per run (all of the submission / runs)",
            f"{overhead['overhead_ms_per_run']:.0f} ms",
            "<= 50 ms",
            "yes" if overhead["overhead_ms_per_run"] <= 50 else "no",
        ),
        ("  of which paid per run (first start to last end)", f"{overhead['marginal_ms_per_run']:.0f} ms", "", ""),
        ("  of which paid once (start-up, MLflow, aggregates)", f"{overhead['fixed_s']:.2f} s", "", ""),
        (
            f"plan + reconcile, {reconcile['runs']} existing runs",
            f"{reconcile['plan_reconcile_s']:.2f} s",
            "< 2 s",
            "yes" if reconcile["plan_reconcile_s"] < 2 else "no",
        ),
        ("orch submit CLI with nothing to run (incl. start-up)", f"{reconcile['orch_submit_cli_s']:.2f} s", "", ""),
        ("load average during the runs (2 cores)", f"{overhead['load_avg']:.1f}", "", ""),
    ]
    for row in rows:
        table.add_row(*row)
    Console().print(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "orchestration_overhead.json").write_text(
        json.dumps({"overhead": overhead, "reconcile": reconcile}, indent=1)
    )
    lines = ["| measure | value | target | ok |", "|---|---|---|---|"] + [f"| {' | '.join(r)} |" for r in rows]
    (RESULTS / "orchestration_overhead.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
