"""Packing on the dev Slurm (cluster/dev/start-slurm.sh, two nodes): the same smoke runs queued one per job
and `runs_per_job` per job, followed to the end with `orch submit --wait`.

Measured: jobs queued (what a QOS MaxSubmitJobs counts), wall seconds from `orch submit` to every run ended
(the CLI process, imports included), and whether every seed's final metric is identical packed and unpacked.

    .venv/bin/python benchmarks/slurm_pack.py [--runs 12] [--per-job 2]
Writes benchmarks/results/slurm_pack.{json,md}. Needs root the first time (it starts Slurm)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent
sys.path.insert(0, str(REPO))

from orchestrator.tracking.ledger import Ledger  # noqa: E402


def submit(tmp: Path, name: str, runs: int, per_job: int) -> dict:
    spec = tmp / f"{name}.yaml"
    spec.write_text(
        f"name: {name}\nworkload: smoke\nworkdir: {tmp / 'jobs'}\nparams: {{steps: 6, sleep_s: 0.5}}\n"
        f"resources: {{cpus: 1, mem_gb: 0.5, time_min: 60, runs_per_job: {per_job}}}\n"
    )
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "submit",
            str(spec),
            "--seeds",
            str(runs),
            "--backend",
            "slurm",
            "--cluster",
            "local-slurm",
            "--wait",
            "--tracking-uri",
            uri,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    wall = time.perf_counter() - start
    ledger = Ledger(uri)
    records = ledger.runs(ledger.experiment_id(name))
    return {
        "runs": len(records),
        "jobs": len({r.tags["orch.job_id"] for r in records}),
        "wall_s": round(wall, 1),
        "finished": sum(r.status == "FINISHED" for r in records),
        "exit": proc.returncode,
        "final": {r.tags["orch.seed"]: r.metrics.get("final_loss") for r in records},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=12)
    ap.add_argument("--per-job", type=int, default=2)
    args = ap.parse_args()
    if subprocess.run(["scontrol", "ping"], capture_output=True).returncode != 0:
        subprocess.run([str(REPO / "cluster" / "dev" / "start-slurm.sh")], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="slurm_pack_"))
    one = submit(tmp, "pack_bench_1", args.runs, 1)
    packed = submit(tmp, f"pack_bench_{args.per_job}", args.runs, args.per_job)
    load = os.getloadavg()[0]
    result = {
        "runs": args.runs,
        "per_job": args.per_job,
        "unpacked": one,
        "packed": packed,
        "identical_finals": one["final"] == packed["final"],
        "load_1min": round(load, 2),
    }
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "slurm_pack.json").write_text(json.dumps(result, indent=1))
    md = ["| submission | runs | jobs | finished | wall s |", "|---|---|---|---|---|"]
    for label, r in (("one run per job", one), (f"runs_per_job: {args.per_job}", packed)):
        md.append(f"| {label} | {r['runs']} | {r['jobs']} | {r['finished']} | {r['wall_s']} |")
    md.append(
        f"\nSame final metric per seed packed and unpacked: {result['identical_finals']}. "
        f"Load average at the end: {result['load_1min']} (2 cores, shared)."
    )
    (ROOT / "results" / "slurm_pack.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
