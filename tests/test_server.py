"""Tracking through a real ``mlflow server`` on a real PostgreSQL (tests/support.py): many
concurrent jobs pushing live, the server killed mid-run, an unreachable server, idempotent ingestion."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from support import REPO, free_port
from typer.testing import CliRunner

from orchestrator import driver
from orchestrator.backends.base import DONE, LOST
from orchestrator.backends.local import LocalBackend
from orchestrator.job.journal import read_journal
from orchestrator.job.push import read_state
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import expand
from orchestrator.spec.spec import load_spec
from orchestrator.tracking.ledger import Ledger

pytestmark = pytest.mark.server


def write_spec(tmp_path: Path, name: str, steps: int, seeds: int, sleep_s: float) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "workload": "smoke",
                "seeds": seeds,
                "workdir": str(tmp_path / "jobs"),
                "params": {"steps": steps, "sleep_s": sleep_s},
                # the live path under test, alone: 64 samplers on 2 cores would only add noise to its timing
                "tracking": {"system_metrics_s": 0},
            }
        )
    )
    return path


def journal_losses(run_dir: RunDir) -> dict[int, float]:
    """What the job computed: step -> loss, from the journal (the source of truth)."""
    records, _ = read_journal(run_dir.journal)
    return {r["step"]: r["metrics"]["loss"] for r in records if r["event"] == "metrics"}


def assert_complete_and_unique(ledger: Ledger, run_id: str, run_dir: RunDir, steps: int) -> None:
    history = ledger.client.get_metric_history(run_id, "loss")
    rows = [(m.step, m.value, m.timestamp) for m in history]
    assert len(rows) == len(set(rows)) == steps, f"{run_id}: {len(rows)} rows, {len(set(rows))} distinct, want {steps}"
    assert {m.step: m.value for m in history} == journal_losses(run_dir)
    run = ledger.client.get_run(run_id)
    assert run.info.status == "FINISHED" and "final_loss" in run.data.metrics


def prepare(ledger: Ledger, spec_path: Path) -> list[driver.Prepared]:
    spec = load_spec(spec_path)
    experiment_id = ledger.experiment_id(spec.name, create=True)
    todo = [(run, None) for run in expand(spec)]
    return driver.prepare(ledger, experiment_id, spec, todo, "local")


def wait_jobs(backend: LocalBackend, prepared: list[driver.Prepared], timeout: float = 120) -> None:
    from orchestrator.backends.base import Job

    jobs = [Job(p.job_id, p.run_dir) for p in prepared]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(s.state in (DONE, LOST) for s in backend.poll(jobs)):
            return
        time.sleep(0.2)
    raise AssertionError("jobs did not end in time")


def sync(workdir: Path, uri: str):
    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["sync", "--workdir", str(workdir), "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    return result


def metric_rows(stack, run_ids: list[str]) -> dict[str, tuple[int, int]]:
    """Straight from PostgreSQL: per run, (rows of 'loss', distinct (step, timestamp, value) among them)."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(stack.db_uri)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sqlalchemy.text(
                    "SELECT run_uuid, count(*), count(DISTINCT (step, timestamp, value)) FROM metrics "
                    "WHERE key = 'loss' AND run_uuid = ANY(:ids) GROUP BY run_uuid"
                ),
                {"ids": run_ids},
            ).all()
    finally:
        engine.dispose()
    return {run_id: (total, distinct) for run_id, total, distinct in rows}


def test_64_concurrent_runs_x_500_metrics_through_the_server_none_lost_none_duplicated(stack, tmp_path):
    from orchestrator.cli import app

    spec = write_spec(tmp_path, "many", steps=500, seeds=64, sleep_s=0.004)
    result = CliRunner().invoke(app, ["submit", str(spec), "--tracking-uri", stack.uri, "--max-parallel", "64"])
    assert result.exit_code == 0, result.output
    ledger = Ledger(stack.uri)
    records = ledger.runs(ledger.experiment_id("many"))
    assert len(records) == 64 and all(r.status == "FINISHED" and "final_loss" in r.metrics for r in records)
    run_dirs = {r.run_id: RunDir(Path(r.tags["orch.run_dir"])) for r in records}
    for run_id, run_dir in run_dirs.items():
        # The jobs' own pushers delivered everything they journaled (the live path, not only ingestion).
        state = read_state(run_dir, run_id)
        assert state is not None and state["offset"] == run_dir.journal.stat().st_size
    assert metric_rows(stack, list(run_dirs)) == {run_id: (500, 500) for run_id in run_dirs}
    for run_id in list(run_dirs)[:4]:  # the values are the journal's, through MLflow's API
        assert_complete_and_unique(ledger, run_id, run_dirs[run_id], 500)
    # Ingesting again, then from scratch for 8 runs (both cursors forgotten: all their rows re-sent to
    # PostgreSQL), adds nothing: MLflow's store drops exact duplicate rows.
    sync(tmp_path / "jobs", stack.uri)
    for run_dir in list(run_dirs.values())[:8]:
        run_dir.cursor.unlink()
        (run_dir.path / "live.json").unlink()
    sync(tmp_path / "jobs", stack.uri)
    assert metric_rows(stack, list(run_dirs)) == {run_id: (500, 500) for run_id in run_dirs}


def test_server_killed_mid_run_and_restarted_loses_nothing(stack, tmp_path):
    ledger = Ledger(stack.uri)
    prepared = prepare(ledger, write_spec(tmp_path, "crash", steps=300, seeds=4, sleep_s=0.03))
    backend = LocalBackend(4)
    job_ids = backend.submit([p.run_dir for p in prepared])
    for item, job_id in zip(prepared, job_ids, strict=False):
        item.job_id = job_id
    deadline = time.monotonic() + 60
    while not all(read_state(p.run_dir, p.run_id) for p in prepared):  # every job has pushed something live
        assert time.monotonic() < deadline, "no live push reached the server"
        time.sleep(0.1)
    assert not any(r["event"] == "end" for p in prepared for r in read_journal(p.run_dir.journal)[0])  # mid-run
    stack.kill_server()  # SIGKILL: no clean shutdown
    time.sleep(1.0)
    stack.start_server()  # same port, same PostgreSQL: the jobs' pushers reconnect on their own
    wait_jobs(backend, prepared)
    for _ in range(2):  # the orchestrator's ingestion brings in whatever the pushers could not; twice: no duplicates
        for item in prepared:
            assert ledger.ingest(item.run_dir) == "FINISHED"
    for item in prepared:
        assert_complete_and_unique(ledger, item.run_id, item.run_dir, 300)


def test_a_job_that_cannot_reach_the_server_finishes_and_sync_brings_it_in(stack, tmp_path):
    ledger = Ledger(stack.uri)
    prepared = prepare(ledger, write_spec(tmp_path, "offline", steps=200, seeds=2, sleep_s=0.0))
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: a compute node without a route
    for item in prepared:
        job = item.run_dir.load()
        item.run_dir.create(job.model_copy(update={"tracking_uri": dead}))
    from orchestrator.job.worker import execute

    for item in prepared:
        assert execute(item.run_dir.path) == "FINISHED"
        assert read_state(item.run_dir, item.run_id) is None  # nothing was acknowledged
        assert ledger.client.get_metric_history(item.run_id, "loss") == []
    sync(tmp_path / "jobs", stack.uri)
    sync(tmp_path / "jobs", stack.uri)
    for item in prepared:
        assert_complete_and_unique(ledger, item.run_id, item.run_dir, 200)


def test_exact_duplicate_rows_are_dropped_by_the_sqlite_store_too(tmp_path):
    from mlflow.entities import Metric

    ledger = Ledger(f"sqlite:///{tmp_path / 'm.db'}")
    run_id = ledger.create_run(ledger.experiment_id("dups", create=True), "r", {}, {}, status="RUNNING")
    rows = [Metric("loss", 1.0 / (i + 1), 1_700_000_000_000 + i, i) for i in range(300)]
    for _ in range(2):
        ledger._log_batch(run_id, rows)
    assert len(ledger.client.get_metric_history(run_id, "loss")) == 300


def test_the_journal_only_worker_imports_neither_mlflow_nor_requests(tmp_path):
    code = f"""
import json, sys
from orchestrator.spec.plan import Run
from orchestrator.job.rundir import RunDir
from orchestrator.job.worker import execute
run_dir = RunDir(__import__('pathlib').Path({str(tmp_path / "r")!r}))
run = Run('smoke', {{'steps': 5}}, 0, 'default', {{}})
run_dir.create({{'run': run.to_dict(), 'run_id': 'x', 'experiment_id': '0', 'cpus': 1, 'gpus': 0,
                'tracking_uri': 'sqlite:////nonexistent/m.db'}})
status = execute(run_dir.path)
print(json.dumps([status, 'mlflow' in sys.modules, 'requests' in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["FINISHED", False, False]


@pytest.mark.parametrize("signum", [15, 12], ids=["SIGTERM", "SIGUSR2"])
def test_a_signalled_job_flushes_its_metrics_to_the_server_before_it_ends(stack, tmp_path, signum):
    """SIGTERM (scancel, preemption) journals KILLED then flushes; SIGUSR2 (Slurm's warning before the time
    limit) flushes before the previous handler (here the default: the process ends)."""
    import os
    import signal as signals

    ledger = Ledger(stack.uri)
    (item,) = prepare(ledger, write_spec(tmp_path, f"sig{signum}", steps=100_000, seeds=1, sleep_s=0.002))
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.job.worker", str(item.run_dir.path)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.monotonic() + 60
    while len(journal_losses(item.run_dir)) < 200:
        assert time.monotonic() < deadline and proc.poll() is None, "the job did not get going"
        time.sleep(0.1)
    proc.send_signal(signum)
    proc.wait(timeout=60)
    records, _ = read_journal(item.run_dir.journal)
    if signum == signals.SIGTERM:
        assert proc.returncode == 1 and records[-1]["event"] == "end" and records[-1]["status"] == "KILLED"
    else:
        assert proc.returncode == -signals.SIGUSR2
    journaled = journal_losses(item.run_dir)
    history = ledger.client.get_metric_history(item.run_id, "loss")  # no ingestion: only the job's own pushes
    assert len(history) == len(journaled) and {m.step: m.value for m in history} == journaled


def test_a_sigkilled_live_job_resumed_from_its_checkpoint_records_every_step_once(stack, tmp_path):
    """Attempt 1 pushes live, is SIGKILLed between checkpoints; attempt 2 resumes and replays the steps after
    the checkpoint (new timestamps). The pusher skips replays by the same rule as ingestion: one row per step."""
    import os

    ledger = Ledger(stack.uri)
    spec = tmp_path / "resume.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "resume",
                "workload": "smoke",
                "seeds": 1,
                "workdir": str(tmp_path / "jobs"),
                "params": {"steps": 1500, "sleep_s": 0.004, "checkpoint_every": 400},
            }
        )
    )
    (item,) = prepare(ledger, spec)
    command = [sys.executable, "-m", "orchestrator.job.worker", str(item.run_dir.path)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(command, cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while not (item.run_dir.checkpoint.exists() and len(journal_losses(item.run_dir)) > 500):
        assert time.monotonic() < deadline and proc.poll() is None, "the job did not get going"
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert subprocess.run(command, cwd=REPO, env=env, timeout=120).returncode == 0
    records, _ = read_journal(item.run_dir.journal)
    steps = [r["step"] for r in records if r["event"] == "metrics"]
    assert len(steps) > len(set(steps)) == 1500  # some steps really were journaled twice
    assert ledger.ingest(item.run_dir) == "FINISHED"
    assert_complete_and_unique(ledger, item.run_id, item.run_dir, 1500)


def journaled_runs(ledger: Ledger, root: Path, count: int, steps: int = 30) -> list[tuple[str, RunDir]]:
    """Runs whose journals a worker wrote (smoke, run in this process) and nobody ingested yet."""
    from orchestrator.job import worker
    from orchestrator.spec.plan import Run

    made = []
    experiment_id = ledger.experiment_id("batched", create=True)
    for seed in range(count):
        run = Run("smoke", {"steps": steps, "noise": 0.1, "sleep_s": 0.0, "fail_at_step": None}, seed, "base")
        run_id = ledger.create_run(experiment_id, f"r{seed}", {"orch.role": "seed"}, {})
        run_dir = RunDir(root / run.key)
        run_dir.create({"run": run.to_dict(), "run_id": run_id, "tracking_uri": ledger.uri, "cpus": 1, "gpus": 0})
        assert worker.execute(run_dir.path) == "FINISHED"
        made.append((run_id, run_dir))
    return made


def test_runs_that_ended_together_are_recorded_in_one_request_to_orch_server(stack, tmp_path, monkeypatch):
    """`orch server`'s route (tracking/server_app.py): the journals of 6 runs, metrics, tags and ends, in one
    request and one transaction; read back through MLflow's API as the client would have written them."""
    from orchestrator.tracking import server_app

    monkeypatch.setenv("ORCH_LIVE", "0")  # the journals only: what an offline node leaves to the orchestrator
    ledger = Ledger(stack.uri)
    made = journaled_runs(ledger, tmp_path, 6)
    sent: list[tuple[int, bool | None]] = []
    real = server_app.post_writes

    def counted(client, writes):
        answer = real(client, writes)
        sent.append((len(writes), answer))
        return answer

    monkeypatch.setattr(server_app, "post_writes", counted)
    assert ledger.ingest_many([run_dir for _, run_dir in made]) == ["FINISHED"] * 6
    assert sent == [(6, True)]
    for run_id, run_dir in made:
        assert_complete_and_unique(ledger, run_id, run_dir, 30)
        recorded = ledger.client.get_run(run_id)
        assert recorded.info.status == "FINISHED" and recorded.info.end_time
        assert recorded.data.tags["orch.attempt"] == "1" and "final_loss" in recorded.data.metrics
    assert ledger.ingest_many([run_dir for _, run_dir in made]) == ["FINISHED"] * 6  # nothing new: no request
    assert len(sent) == 1


def test_a_plain_mlflow_server_is_written_through_mlflows_api(tmp_path, monkeypatch):
    """A server without orch's route (`mlflow server` itself): asked once, then MLflow's API, all recorded."""
    from orchestrator.tracking import server_app

    monkeypatch.setenv("ORCH_LIVE", "0")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'p.db'}",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
        start_new_session=True,
    )
    try:
        uri = f"http://127.0.0.1:{port}"
        from orchestrator.tracking import server as server_mod

        deadline = time.monotonic() + 90
        while not server_mod.healthy(uri):
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        ledger = Ledger(uri)
        made = journaled_runs(ledger, tmp_path, 3, steps=5)
        answers: list[bool | None] = []
        real = server_app.post_writes
        monkeypatch.setattr(server_app, "post_writes", lambda c, w: answers.append(real(c, w)) or answers[-1])
        assert ledger.ingest_many([run_dir for _, run_dir in made]) == ["FINISHED"] * 3
        assert answers == [None]  # no route there: not asked again
        for run_id, run_dir in made:
            assert_complete_and_unique(ledger, run_id, run_dir, 5)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)


def test_compare_through_a_tracking_server_reads_what_the_sqlite_store_reads(stack, tmp_path):
    """`orch compare` reads a server's store through MLflow's API (no sqlite file to read directly): the same
    experiment, run once into sqlite and once through the server, compares to the same numbers."""
    doc = {
        "name": "cmp_server",
        "workload": "smoke",
        "params": {"steps": 4, "noise": 0.1},
        "seeds": 3,
        "variants": {"low": {"offset": 0.0}, "high": {"offset": 0.3}},
        "workdir": str(tmp_path / "jobs"),
    }
    spec = tmp_path / "cmp.yaml"
    spec.write_text(yaml.safe_dump(doc))
    from orchestrator.cli import app

    local = f"sqlite:///{tmp_path / 'local.db'}"
    reports = []
    for uri in (local, stack.uri):
        assert CliRunner().invoke(app, ["submit", str(spec), "--tracking-uri", uri]).exit_code == 0
        out = CliRunner().invoke(app, ["compare", "cmp_server", "--json", "--no-log", "--tracking-uri", uri]).output
        reports.append(json.loads(out[out.index("{") :]))
    strip = lambda r: [(g["name"], g["n"], g["mean"]) for g in r["groups"]]  # noqa: E731
    assert strip(reports[0]) == strip(reports[1]) and len(reports[0]["groups"]) == 2
    # the same values, read in another order: sums agree to rounding
    assert [c["p_value"] for c in reports[0]["comparisons"]] == pytest.approx(
        [c["p_value"] for c in reports[1]["comparisons"]], rel=1e-12
    )
