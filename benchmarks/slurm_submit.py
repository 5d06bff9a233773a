"""Slurm backend at scale, on the dev Slurm (cluster/dev/start-slurm.sh): 500 smoke runs queued as job
arrays, then `orch status` over the 500, then `orch cancel` of the 500.

Measured: seconds to queue them all (MLflow runs + run directories, then sbatch), scheduler commands
made, and the time `orch status` takes for 500 runs in process (target < 3 s, one batched scheduler
query) and as a whole CLI process (Python imports included). Peer, measured in the same run on a
sample of the same jobs: the naive way, one scheduler call per job (one `sacct -j ID` per run for status,
one `sbatch` per run for submission, held so that nothing runs), extrapolated per 500 runs.

    .venv/bin/python benchmarks/slurm_submit.py [--runs 500] [--sample 50]
Writes benchmarks/results/slurm_submit.{json,md}. Needs root the first time (it starts Slurm)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
sys.path.insert(0, str(REPO))

from orchestrator import driver, groups  # noqa: E402
from orchestrator.analysis.status import experiment_status  # noqa: E402
from orchestrator.backends.base import Job  # noqa: E402
from orchestrator.backends.base import make as make_backend  # noqa: E402
from orchestrator.backends.slurm import SlurmBackend  # noqa: E402
from orchestrator.spec.plan import expand  # noqa: E402
from orchestrator.spec.spec import load_spec  # noqa: E402
from orchestrator.tracking.ledger import Ledger  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--sample", type=int, default=50, help="jobs for the one-call-per-job peer")
    args = ap.parse_args()
    console = Console()
    if subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
        subprocess.run([str(REPO / "cluster" / "dev" / "start-slurm.sh")], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="slurm_bench_"))
    spec_path = tmp / "spec.yaml"
    spec_path.write_text(
        f"name: slurm_bench\nworkload: smoke\nworkdir: {tmp / 'jobs'}\ncluster: local-slurm\n"
        f"backend: slurm\nparams: {{steps: 3}}\nseeds: {args.runs}\n"
        "resources: {cpus: 1, mem_gb: 0.5, time_min: 60}\n"
    )
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    spec = load_spec(spec_path)
    runs = expand(spec)
    ledger = Ledger(uri)
    experiment_id = ledger.experiment_id(spec.name, create=True)
    backend, t_check = timed(lambda: make_backend("slurm", spec))
    # held: the 500 stay PENDING, so status measures orch's own cost (one query, 500 journals checked) and
    # not MLflow ingesting finished runs (measured apart below, per run)
    backend.profile = backend.profile.model_copy(update={"sbatch": {"hold": True}})
    prepared, t_prepare = timed(lambda: driver.prepare(ledger, experiment_id, spec, [(r, None) for r in runs], "slurm"))
    job_ids, t_sbatch = timed(lambda: backend.submit([p.run_dir for p in prepared]))
    _, t_record = timed(lambda: driver.record_job_ids(ledger, prepared, job_ids))
    submit_calls = dict(backend.calls)
    arrays = sorted({j.split("_")[0] for j in job_ids})

    def status():
        poller = SlurmBackend()
        records, t_search = timed(lambda: ledger.runs(experiment_id))
        _, t_refresh = timed(lambda: driver.refresh(ledger, records, lambda name: poller))
        _, t_summary = timed(
            lambda: (groups.update_groups(ledger, experiment_id), experiment_status(ledger, experiment_id))
        )
        return poller, t_search, t_refresh, t_summary

    (poller, t_search, t_refresh, t_summary), t_status = timed(status)
    _, t_status2 = timed(status)
    cli, t_cli = timed(
        lambda: subprocess.run(
            [sys.executable, "-m", "orchestrator", "status", spec.name, "--tracking-uri", uri],
            capture_output=True,
            text=True,
            cwd=REPO,
        )
    )

    # peer: one scheduler call per job
    sample = job_ids[: args.sample]
    _, t_naive_poll = timed(
        lambda: [
            subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", j], capture_output=True)
            for j in sample
        ]
    )
    held: list[str] = []

    def naive_submit():
        for _ in sample:
            out = subprocess.run(
                ["sbatch", "--hold", "--parsable", "-J", "orch-bench-naive", "--wrap", "true"],
                capture_output=True,
                text=True,
            ).stdout.strip()
            held.append(out.split(";")[0])

    _, t_naive_submit = timed(naive_submit)
    subprocess.run(["scancel", *held], capture_output=True)

    canceller = SlurmBackend()
    _, t_cancel = timed(lambda: canceller.cancel([Job(p.job_id, p.run_dir) for p in prepared]))
    for p in prepared:
        ledger.close_dead(p.run_dir, "benchmark over: cancelled")

    n = len(runs)
    per_500 = 500 / len(sample)
    rows = [
        ("runs", f"{n}", "", ""),
        ("arrays (MaxArraySize split)", f"{len(arrays)}", "", ""),
        ("check request (sbatch --test-only)", f"{t_check:.2f} s", "", ""),
        ("MLflow runs + run directories", f"{t_prepare:.2f} s", "", ""),
        (
            "sbatch of the arrays (submitit)",
            f"{t_sbatch:.2f} s",
            f"{t_naive_submit * per_500:.2f} s",
            f"{t_naive_submit * per_500 / t_sbatch:.1f}x",
        ),
        ("record job ids in MLflow", f"{t_record:.2f} s", "", ""),
        ("queue all, total", f"{t_check + t_prepare + t_sbatch + t_record:.2f} s", "", ""),
        ("scheduler calls to submit (incl. --test-only)", json.dumps(submit_calls), f"{n} sbatch", ""),
        ("orch status, in process (1st)", f"{t_status:.2f} s", "", ""),
        ("  MLflow search of the runs", f"{t_search:.2f} s", "", ""),
        ("  refresh: 500 journals + scheduler query", f"{t_refresh:.2f} s", "", ""),
        ("  group summary (2 more MLflow searches)", f"{t_summary:.2f} s", "", ""),
        ("orch status, in process (2nd)", f"{t_status2:.2f} s", "", ""),
        (
            "scheduler calls per status",
            json.dumps(dict(poller.calls)),
            f"{n} sacct",
            f"{n / max(1, sum(poller.calls.values())):.0f}x fewer",
        ),
        ("polling the scheduler", "", f"{t_naive_poll * per_500:.2f} s", ""),
        ("orch status, whole CLI process", f"{t_cli:.2f} s (rc {cli.returncode})", "", ""),
        ("orch cancel (one scancel + wait)", f"{t_cancel:.2f} s, calls {json.dumps(dict(canceller.calls))}", "", ""),
    ]
    table = Table(
        title=f"Slurm backend, {n} smoke runs (peer: one scheduler call per job, {len(sample)} "
        f"measured, x{per_500:.0f})"
    )
    for col in ("what", "orch (arrays, batched)", "peer per 500", "ratio"):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    load = os.getloadavg()
    result = {
        "runs": n,
        "arrays": len(arrays),
        "check_s": t_check,
        "prepare_s": t_prepare,
        "sbatch_s": t_sbatch,
        "record_s": t_record,
        "submit_calls": submit_calls,
        "status_s": t_status,
        "status_again_s": t_status2,
        "status_search_s": t_search,
        "status_refresh_s": t_refresh,
        "status_summary_s": t_summary,
        "status_calls": dict(poller.calls),
        "status_cli_s": t_cli,
        "cancel_s": t_cancel,
        "cancel_calls": dict(canceller.calls),
        "peer_sample": len(sample),
        "peer_poll_per_500_s": t_naive_poll * per_500,
        "peer_sbatch_per_500_s": t_naive_submit * per_500,
        "load_average_1min_after": load[0],
        "cores": os.cpu_count(),
    }
    out = ROOT / "results"
    out.mkdir(exist_ok=True)
    (out / "slurm_submit.json").write_text(json.dumps(result, indent=1))
    md = [
        "# Slurm backend: 500 runs as arrays",
        "",
        f"Dev Slurm (one node, {os.cpu_count()} cores, shared machine, "
        f"load average {load[0]:.1f} at the end). `.venv/bin/python benchmarks/slurm_submit.py`",
        "",
        "| what | orch (arrays, batched) | peer per 500 | ratio |",
        "|---|---|---|---|",
    ]
    md += [f"| {' | '.join(r)} |" for r in rows]
    (out / "slurm_submit.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
