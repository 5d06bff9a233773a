"""Metrics per second into MLflow from 16 concurrent runs, by path:

  sqlite direct                 each run's process writes the sqlite file itself (log_batch of 1000)
  server on sqlite              each run's process posts log_batch (1000) to `mlflow server` on sqlite
  server on PostgreSQL          the same, server on PostgreSQL
  journal + ingest (sqlite)     runs write journals; the orchestrator ingests them into sqlite (orch's local default)
  journal + ingest (server/PG)  the same, ingested through the server on PostgreSQL (ORCH_LIVE=0)
  journal + ingest (PG direct)  the same, the orchestrator writing PostgreSQL itself (tracking URI postgresql://)
  journal + live push (server/PG)  real workers (smoke workload) whose live pushers post to the server;
                                the orchestrator ingests what is left (orch's cluster default)
  ... (server/PG, 2 workers)    the same with `orch server start --workers 2`

Wall time runs from the moment every process is ready (imports done, barrier) to every row stored; the
count of rows is checked in the store.
Run: .venv/bin/python benchmarks/tracking_throughput.py [--runs 16 --metrics 2000]
Writes benchmarks/results/tracking_throughput.{json,md}."""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "_work" / "tracking"
BATCH = 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rows_for(run_index: int, n: int, base_ms: int) -> list[tuple[str, float, int, int]]:
    return [("loss", 1.0 / (i + 1) + run_index, base_ms + i, i) for i in range(n)]


# -- one process per run -------------------------------------------------------------------------------
def direct_writer(uri: str, run_id: str, index: int, n: int, barrier) -> None:
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    rows = [Metric(*r) for r in rows_for(index, n, 1_700_000_000_000)]
    client.get_run(run_id)  # connection and schema check done before the clock starts
    barrier.wait()
    for i in range(0, n, BATCH):
        client.log_batch(run_id, metrics=rows[i : i + BATCH])


def rest_writer(uri: str, run_id: str, index: int, n: int, barrier) -> None:
    import requests

    session = requests.Session()
    rows = [{"key": k, "value": v, "timestamp": t, "step": s} for k, v, t, s in rows_for(index, n, 1_700_000_000_000)]
    session.get(f"{uri}/health").raise_for_status()
    barrier.wait()
    for i in range(0, n, BATCH):
        r = session.post(
            f"{uri}/api/2.0/mlflow/runs/log-batch", json={"run_id": run_id, "metrics": rows[i : i + BATCH]}, timeout=300
        )
        r.raise_for_status()


def journal_writer(run_dir: str, index: int, n: int, barrier) -> None:
    from orchestrator.job.journal import JournalWriter
    from orchestrator.job.rundir import RunDir

    journal = JournalWriter(RunDir(Path(run_dir)).journal)
    journal.write("start", attempt=1, pid=os.getpid(), host="bench", resumed_from_step=None)
    barrier.wait()
    for step in range(n):
        journal.write("metrics", step=step, metrics={"loss": 1.0 / (step + 1) + index})
    journal.write("end", status="FINISHED", final={"final_loss": 1.0}, error=None)
    journal.close()


def worker_job(run_dir: str, barrier) -> None:
    import requests  # noqa: F401 - imported before the clock, like a job's warm-up

    from orchestrator.job import worker

    barrier.wait()
    worker.execute(run_dir)


def run_processes(target, arg_lists: list[tuple]) -> float:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(arg_lists) + 1)
    procs = [ctx.Process(target=target, args=(*args, barrier)) for args in arg_lists]
    for p in procs:
        p.start()
    barrier.wait(timeout=600)
    start = time.perf_counter()
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise RuntimeError(f"{target.__name__} exited {p.exitcode}")
    return start


# -- modes ---------------------------------------------------------------------------------------------
def make_runs(uri: str, name: str, count: int) -> list[str]:
    from orchestrator.tracking.ledger import Ledger

    ledger = Ledger(uri)
    experiment_id = ledger.experiment_id(name, create=True)
    return [
        ledger.create_run(experiment_id, f"r{i}", {"orch.role": "seed"}, {}, status="RUNNING") for i in range(count)
    ]


def count_rows(uri: str, run_ids: list[str], key: str = "loss") -> int:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    rows = 0
    for run_id in run_ids:
        history = client.get_metric_history(run_id, key)
        rows += len({(m.step, m.timestamp, m.value) for m in history})
        assert len(history) == len({(m.step, m.timestamp, m.value) for m in history}), "duplicate rows"
    return rows


def mode_direct(uri: str, name: str, runs: int, n: int, rest: bool) -> tuple[float, int]:
    run_ids = make_runs(uri, name, runs)
    start = run_processes(rest_writer if rest else direct_writer, [(uri, rid, i, n) for i, rid in enumerate(run_ids)])
    wall = time.perf_counter() - start
    return wall, count_rows(uri, run_ids)


def make_run_dirs(uri: str, name: str, runs: int, steps: int, workload_params: dict | None = None):
    from orchestrator.job.rundir import RunDir
    from orchestrator.spec.plan import Run

    run_ids = make_runs(uri, name, runs)
    dirs = []
    for i, run_id in enumerate(run_ids):
        run_dir = RunDir(WORK / "jobs" / name / f"r{i}")
        shutil.rmtree(run_dir.path, ignore_errors=True)
        run = Run("smoke", workload_params or {"steps": steps}, i, "default", {})
        run_dir.create(
            {"run": run.to_dict(), "run_id": run_id, "experiment_id": "0", "tracking_uri": uri, "cpus": 1, "gpus": 0}
        )
        dirs.append(run_dir)
    return run_ids, dirs


def ingest_all(uri: str, dirs) -> None:
    from orchestrator.tracking.ledger import Ledger

    ledger = Ledger(uri)  # as orch's follow loop does: the runs that ended together, in one call
    assert ledger.ingest_many(dirs) == ["FINISHED"] * len(dirs)


def mode_journal_ingest(uri: str, name: str, runs: int, n: int) -> tuple[float, int]:
    run_ids, dirs = make_run_dirs(uri, name, runs, n)
    from orchestrator.tracking.ledger import Ledger

    Ledger(uri)  # client and store ready before the clock, like a running orchestrator
    start = run_processes(journal_writer, [(str(d.path), i, n) for i, d in enumerate(dirs)])
    ingest_all(uri, dirs)
    wall = time.perf_counter() - start
    return wall, count_rows(uri, run_ids)


def mode_live(uri: str, name: str, runs: int, n: int) -> tuple[float, int, int]:
    params = {"steps": n, "noise": 0.05, "checkpoint_every": n}
    run_ids, dirs = make_run_dirs(uri, name, runs, n, params)
    start = run_processes(worker_job, [(str(d.path),) for d in dirs])
    jobs_s = time.perf_counter() - start  # every job ended: its pusher flushed (or gave up) before exit
    from orchestrator.job.push import read_state

    pushed = sum(
        1
        for d, rid in zip(dirs, run_ids, strict=False)
        if (read_state(d, rid) or {}).get("offset") == d.journal.stat().st_size
    )
    ingest_all(uri, dirs)  # tags, status, final metrics, and anything a pusher could not send
    wall = time.perf_counter() - start
    return wall, count_rows(uri, run_ids), pushed, jobs_s


# -- the stack -----------------------------------------------------------------------------------------
def start_postgres() -> tuple[str, dict]:
    WORK.mkdir(parents=True, exist_ok=True)
    for p in (REPO / "benchmarks" / "_work", WORK):
        p.chmod(0o755)  # the 'postgres' user must reach its data directory
    env = {**os.environ, "ORCH_PG_DIR": str(WORK / "pg"), "ORCH_PG_PORT": str(free_port())}
    out = subprocess.run(
        [str(REPO / "cluster/dev/start-postgres.sh")], env=env, capture_output=True, text=True, check=True
    )
    uri_file = Path(out.stdout.strip().splitlines()[-1])  # the script prints where it keeps the URI (0600)
    return uri_file.read_text().strip(), env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--metrics", type=int, default=2000, help="metrics per run")
    args = parser.parse_args()
    from rich.console import Console
    from rich.table import Table

    from orchestrator.tracking import server

    console = Console()
    shutil.rmtree(WORK, ignore_errors=True)
    runs, n = args.runs, args.metrics
    total = runs * n
    results = []
    pg_uri, pg_env = start_postgres()
    servers = []
    try:
        sqlite_uri = f"sqlite:///{WORK / 'direct.db'}"
        from orchestrator.tracking.ledger import Ledger

        Ledger(sqlite_uri).experiment_id("warm", create=True)  # schema created once, before any writer
        srv_sqlite = server.start(
            f"sqlite:///{WORK / 'server.db'}", WORK / "art1", port=free_port(), run_dir=WORK / "srv1"
        )
        servers.append(WORK / "srv1")
        srv_pg = server.start(pg_uri, WORK / "art2", port=free_port(), run_dir=WORK / "srv2")
        servers.append(WORK / "srv2")
        srv_pg2 = server.start(pg_uri, WORK / "art3", port=free_port(), run_dir=WORK / "srv3", workers=2)
        servers.append(WORK / "srv3")
        console.print(f"stack up: server/sqlite {srv_sqlite.uri}, server/PostgreSQL {srv_pg.uri}")

        def record(path: str, wall: float, stored: int, note: str = "") -> None:
            results.append(
                {
                    "path": path,
                    "runs": runs,
                    "metrics": total,
                    "stored": stored,
                    "wall_s": round(wall, 2),
                    "metrics_per_s": round(stored / wall),
                    "note": note,
                }
            )
            console.print(f"{path}: {stored}/{total} in {wall:.2f} s -> {stored / wall:,.0f}/s")

        record("sqlite direct", *mode_direct(sqlite_uri, "direct", runs, n, rest=False))
        record("server on sqlite", *mode_direct(srv_sqlite.uri, "srv_sqlite", runs, n, rest=True))
        record("server on PostgreSQL", *mode_direct(srv_pg.uri, "srv_pg", runs, n, rest=True))
        record(
            "journal + ingest (sqlite)",
            *mode_journal_ingest(f"sqlite:///{WORK / 'ingest.db'}", "ingest", runs, n),
            "orch default without a server",
        )
        record(
            "journal + ingest (PostgreSQL direct)",
            *mode_journal_ingest(server.normalise_backend(pg_uri), "ingest_pgd", runs, n),
            "orchestrator writes PostgreSQL itself",
        )
        os.environ["ORCH_LIVE"] = "0"
        record("journal + ingest (server/PostgreSQL)", *mode_journal_ingest(srv_pg.uri, "ingest_pg", runs, n))
        os.environ.pop("ORCH_LIVE")
        wall, stored, pushed, jobs_s = mode_live(srv_pg.uri, "live_pg", runs, n)
        record(
            "journal + live push (server/PostgreSQL)",
            wall,
            stored,
            f"orch cluster default; {pushed}/{runs} runs fully pushed by their jobs, all jobs ended after "
            f"{jobs_s:.1f} s ({stored / jobs_s:,.0f}/s), then tags/status ingestion",
        )
        wall, stored, pushed, jobs_s = mode_live(srv_pg2.uri, "live_pg2", runs, n)
        record(
            "journal + live push (server/PostgreSQL, 2 workers)",
            wall,
            stored,
            f"{pushed}/{runs} runs fully pushed by their jobs, all jobs ended after {jobs_s:.1f} s "
            f"({stored / jobs_s:,.0f}/s)",
        )
    finally:
        for run_dir in servers:
            server.stop(run_dir)
        subprocess.run([str(REPO / "cluster/dev/stop-postgres.sh")], env=pg_env, capture_output=True)

    baseline = results[0]["metrics_per_s"]
    table = Table(title=f"metrics/s into MLflow, {runs} concurrent runs x {n} metrics ({total:,} rows)")
    for col in ("path", "stored", "wall s", "metrics/s", "vs sqlite direct", "note"):
        table.add_column(col, justify="left" if col in ("path", "note") else "right")
    for r in results:
        r["vs_sqlite_direct"] = round(r["metrics_per_s"] / baseline, 2)
        table.add_row(
            r["path"],
            f"{r['stored']:,}",
            f"{r['wall_s']:.2f}",
            f"{r['metrics_per_s']:,}",
            f"{r['vs_sqlite_direct']:.2f}x",
            r["note"],
        )
    console.print(table)
    meta = {
        "machine": f"{platform.node()} {os.cpu_count()} cores, {platform.platform()}",
        "python": platform.python_version(),
        "load_avg_at_end": os.getloadavg()[0],
        "time": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "tracking_throughput.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    lines = [
        f"# Tracking throughput ({meta['time']})",
        "",
        f"{runs} concurrent runs x {n} metrics = {total:,} rows; {meta['machine']}; load average at the end "
        f"{meta['load_avg_at_end']:.1f} (machine shared). Wall time from all processes ready to all rows stored.",
        "",
        "| path | stored | wall s | metrics/s | vs sqlite direct | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['path']} | {r['stored']:,} | {r['wall_s']:.2f} | {r['metrics_per_s']:,} | {r['vs_sqlite_direct']:.2f}x "
        f"| {r['note']} |"
        for r in results
    ]
    (RESULTS / "tracking_throughput.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
