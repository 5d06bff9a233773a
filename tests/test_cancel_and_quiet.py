"""`orch cancel` stops queued local runs for good, atomic files survive concurrent writers, a refused Slurm
requeue reaches orch.error, and Ctrl-C / MLflow leave orch's terminal clean."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir, atomic_write, umask

SMOKE = {"name": "cq", "workload": "smoke", "params": {"steps": 5, "noise": 0.1}}


def journals(workdir: Path) -> dict[str, list[dict]]:
    return {j.parent.name: read_journal(j)[0] for j in workdir.glob("*/*/journal.jsonl")}


def started(workdir: Path) -> bool:
    return any(r["event"] == "start" for records in journals(workdir).values() for r in records)


# -- item 2: cancel ---------------------------------------------------------------------------------------
def test_atomic_write_survives_two_concurrent_writers(tmp_path):
    # `orch cancel` and `orch submit` both write a run's ingested.json: with one shared tmp name, one writer's
    # rename took the other's tmp file away (FileNotFoundError .../ingested.json.tmp).
    target = tmp_path / "ingested.json"
    errors: list[BaseException] = []

    def writer(tag: str) -> None:
        try:
            for i in range(150):
                atomic_write(target, f'{{"{tag}": {i}}}'.encode())
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_text() in ('{"a": 149}', '{"b": 149}')
    assert [p.name for p in tmp_path.iterdir()] == ["ingested.json"]  # no tmp file left behind
    assert oct(target.stat().st_mode & 0o777) == oct(0o644 & ~umask())  # as the umask allows, never writable by others


def test_cancel_from_another_process_stops_queued_local_runs(store):
    # One run at a time, four queued: `orch cancel` (another process than the submit that owns the queue)
    # must stop the running one and keep the three queued ones from ever starting.
    path = store.spec({**SMOKE, "params": {"steps": 200, "sleep_s": 0.05}, "seeds": 4})
    submit = store.orch_process("submit", str(path), "--max-parallel", "1")
    try:
        wait_for(lambda: started(store.workdir), timeout=90, what="the first run to start")
        result = store.orch("cancel", "cq", check=True)
        assert "4" in result.output
        submit.communicate(timeout=90)
    finally:
        if submit.poll() is None:
            submit.kill()
            submit.wait()
    found = journals(store.workdir)
    assert len(found) == 4
    for key, records in found.items():
        events = [r["event"] for r in records]
        ends = [r for r in records if r["event"] == "end"]
        assert events[-1] == "end" and len(ends) == 1, (key, events)  # nothing started after the cancel's end
        assert ends[0]["status"] == "KILLED", (key, ends)
    assert sum("start" in [r["event"] for r in records] for records in found.values()) == 1
    records = store.seed_runs("cq")
    assert len(records) == 4 and {r.status for r in records} == {"KILLED"}


def test_a_worker_started_on_a_cancelled_run_directory_runs_nothing(store, tmp_path, monkeypatch):
    # The window between the local backend's look at the marker and the worker's `start`: the worker looks
    # again after journaling `start`, so a cancel that missed its pid still stops it before the workload runs.
    from orchestrator.job import worker
    from orchestrator.spec.plan import Run

    run = Run("smoke", {"steps": 3}, 0, "base")
    run_dir = RunDir(tmp_path / "r")
    run_dir.create({"run": run.to_dict(), "run_id": "x", "tracking_uri": store.uri, "cpus": 1, "gpus": 0})
    run_dir.mark_cancelled("cancelled before it started")
    assert worker.execute(run_dir.path) == "KILLED"
    assert not run_dir.journal.exists()  # refused before `start`: the canceller journals the end

    calls = []
    real = RunDir.cancelled

    def late_cancel(self):  # absent at the first look, present at the second: the race
        calls.append(1)
        return None if len(calls) == 1 else real(self)

    run_dir.create({"run": run.to_dict(), "run_id": "x", "tracking_uri": store.uri, "cpus": 1, "gpus": 0})
    assert run_dir.cancelled() is None  # create() re-arms a directory (a resubmission of a cancelled run)
    run_dir.mark_cancelled("cancelled before it started")
    monkeypatch.setattr(RunDir, "cancelled", late_cancel)
    assert worker.execute(run_dir.path) == "KILLED"
    monkeypatch.undo()
    records = read_journal(run_dir.journal)[0]
    assert [r["event"] for r in records] == ["start", "end"]
    assert records[-1]["status"] == "KILLED" and records[-1]["error"] == "cancelled before it started"


# -- item 6: a refused Slurm requeue ----------------------------------------------------------------------
@pytest.mark.parametrize("refused", [True, False])
def test_a_refused_slurm_requeue_ends_the_run_saying_why(store, tmp_path, monkeypatch, refused):
    """SIGUSR2 through submitit's own signal handler, as in a Slurm job; only the `scontrol requeue` call is
    simulated: refused as with JobRequeue=0, the run ends KILLED with Slurm's answer in orch.error (it was
    journaled `requeue` and closed later with only "Slurm: FAILED (NonZeroExitCode)"); accepted, the
    journal says `requeue` and the worker leaves as before."""
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission, JobPaths
    from submitit.slurm.slurm import SlurmJobEnvironment

    from orchestrator.backends import slurm_job as slurm
    from orchestrator.job import worker
    from orchestrator.spec.plan import Run

    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    monkeypatch.setattr(worker, "_requeue_reason", None)
    monkeypatch.setattr(worker, "requeue_probe", None)
    monkeypatch.setattr(SlurmJobEnvironment, "_requeue", SlurmJobEnvironment._requeue)  # SlurmRun replaces it
    answer = "scontrol: error: Requested operation is presently disabled for job 4242"
    asked: list[str] = []

    def scontrol_requeue(job_id: str) -> subprocess.CompletedProcess:
        asked.append(job_id)
        return subprocess.CompletedProcess(
            ["scontrol", "requeue", job_id], 1 if refused else 0, "", answer + "\n" if refused else ""
        )

    monkeypatch.setattr(slurm, "scontrol_requeue", scontrol_requeue)
    ledger = store.ledger()
    experiment_id = ledger.experiment_id("cq", create=True)
    run_id = ledger.create_run(experiment_id, "base/seed0", {"orch.role": "seed"}, {})
    run_dir = RunDir(tmp_path / "run")
    run_dir.create(
        {
            "run": Run("smoke", {"steps": 400, "sleep_s": 0.02}, 0, "base").to_dict(),
            "run_id": run_id,
            "experiment_id": experiment_id,
            "tracking_uri": store.uri,
            "cpus": 1,
            "gpus": 0,
        }
    )
    job = slurm.SlurmRun(max_requeues=3)
    delayed = DelayedSubmission(job, str(run_dir.path))
    delayed.set_timeout(60, 3)
    (tmp_path / "submitit").mkdir()  # where submitit re-dumps the call for the requeued attempt
    handler = SignalHandler(SlurmJobEnvironment(), JobPaths(tmp_path / "submitit", job_id="4242"), delayed)

    def preempt() -> None:
        wait_for(lambda: run_dir.checkpoint.exists(), timeout=60, what="a checkpoint")
        os.kill(os.getpid(), signal.SIGUSR2)

    previous = signal.signal(signal.SIGUSR2, handler.checkpoint_and_try_requeue)
    thread = threading.Thread(target=preempt)
    thread.start()
    try:
        if refused:
            assert job(str(run_dir.path)) == "KILLED"
        else:
            with pytest.raises(SystemExit):  # submitit's exit after a requeue
                job(str(run_dir.path))
    finally:
        thread.join()
        signal.signal(signal.SIGUSR2, previous)
    assert asked == ["4242"]
    records = read_journal(run_dir.journal)[0]
    kinds = [r["event"] for r in records]
    if not refused:
        assert kinds[-1] == "requeue" and "end" not in kinds
        return
    assert "requeue" not in kinds and kinds[-1] == "end", kinds
    assert records[-1]["status"] == "KILLED" and answer in records[-1]["error"]
    assert ledger.ingest(run_dir) == "KILLED"
    error = ledger.get(run_id).tags["orch.error"]
    assert "Slurm refused to requeue job 4242" in error and "presently disabled" in error, error


# -- item 9: a clean terminal ------------------------------------------------------------------------------
def _smoke_run_dir(root: Path, store, params: dict) -> RunDir:
    from orchestrator.spec.plan import Run

    run_dir = RunDir(root / "run")
    run_dir.create(
        {
            "run": Run("smoke", params, 0, "base").to_dict(),
            "run_id": "x",
            "tracking_uri": store.uri,
            "cpus": 1,
            "gpus": 0,
        }
    )
    return run_dir


def _interrupted_while_setting_up(path: str) -> None:
    from orchestrator.job import worker

    worker.set_threads = lambda cpus: signal.raise_signal(signal.SIGINT)  # Ctrl-C before the workload runs
    worker.child_main(path)


def _interrupted_twice(path: str) -> None:
    from orchestrator.job import journal, worker

    write = journal.JournalWriter.write

    def write_under_ctrl_c(self, event, **fields):
        if event == "metrics" and fields["step"] == 2:
            signal.raise_signal(signal.SIGINT)  # the Ctrl-C, inside the workload
        if event == "end":  # a second Ctrl-C, and the orchestrator's SIGTERM, while the end is journaled
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGTERM)
        write(self, event, **fields)

    journal.JournalWriter.write = write_under_ctrl_c  # type: ignore[method-assign]
    worker.child_main(path)


@pytest.mark.parametrize("how", ["setting_up", "twice"])
def test_a_local_worker_interrupted_by_ctrl_c_exits_without_a_traceback(store, tmp_path, capfd, how):
    # A Ctrl-C reaches every worker with orch; one landing outside the workload (or a second one) made
    # multiprocessing print "Process ForkServerProcess-N: Traceback ..." for each worker on orch's terminal.
    import multiprocessing

    run_dir = _smoke_run_dir(tmp_path, store, {"steps": 50, "sleep_s": 0.01})
    target = _interrupted_while_setting_up if how == "setting_up" else _interrupted_twice
    proc = multiprocessing.get_context("fork").Process(target=target, args=(str(run_dir.path),))
    proc.start()
    proc.join(60)
    err = capfd.readouterr().err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    if how == "setting_up":
        assert proc.exitcode == 130 and not run_dir.journal.exists()  # orch closes the run: it got the Ctrl-C too
    else:
        records = read_journal(run_dir.journal)[0]
        assert proc.exitcode == 1 and records[-1]["event"] == "end" and records[-1]["status"] == "KILLED"


@contextlib.contextmanager
def two_workers_running(store, seeds: int) -> Iterator[subprocess.Popen]:
    """`orch submit` of long smoke runs, 2 at a time, in a session of its own, once both workers started;
    its whole group killed at the end if the test left it running."""
    path = store.spec({**SMOKE, "params": {"steps": 2000, "sleep_s": 0.05}, "seeds": seeds})
    submit = store.orch_process("submit", str(path), "--max-parallel", "2", start_new_session=True)
    try:
        wait_for(
            lambda: (
                sum(any(r["event"] == "start" for r in records) for records in journals(store.workdir).values()) == 2
            ),
            timeout=90,
            what="two workers",
        )
        yield submit
    finally:
        if submit.poll() is None:
            os.killpg(submit.pid, signal.SIGKILL)
            submit.wait()


def test_ctrl_c_on_submit_leaves_a_clean_terminal_and_every_run_killed(store):
    # What a terminal does on Ctrl-C: SIGINT to the whole foreground process group (orch, its forkserver, the
    # workers). Also: a new store's MLflow INFO lines ("Creating initial MLflow database tables") are not shown.
    with two_workers_running(store, seeds=3) as submit:
        os.killpg(submit.pid, signal.SIGINT)
        out, _ = submit.communicate(timeout=90)
    assert submit.returncode == 130, out
    assert "Traceback" not in out and "ForkServerProcess" not in out, out
    assert "MLflow database tables" not in out and "INFO" not in out, out
    assert "cancelled" in out
    assert {r.status for r in store.seed_runs("cq")} == {"KILLED"}
    for records in journals(store.workdir).values():
        assert records[-1]["event"] == "end" and records[-1]["status"] == "KILLED"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["kill", "hangup"])
def test_kill_or_a_closed_terminal_stops_submit_and_its_runs_like_ctrl_c(store, signum):
    """`kill PID` (SIGTERM, `timeout`, a cron's end) or a closed SSH session (SIGHUP) reach orch alone, not its
    runs: orch stops them as on Ctrl-C (KILLED, recorded), instead of leaving them running with nobody
    following them."""
    import psutil

    with two_workers_running(store, seeds=2) as submit:
        family = psutil.Process(submit.pid).children(recursive=True)
        submit.send_signal(signum)  # to orch alone
        out, _ = submit.communicate(timeout=90)
    assert submit.returncode == 130 and "cancelled" in out and "Traceback" not in out, out
    assert {r.status for r in store.seed_runs("cq")} == {"KILLED"}, out
    _, alive = psutil.wait_procs(family, timeout=30)
    assert not [p for p in alive if "forkserver" not in " ".join(p.cmdline())], alive  # no run left training


QUIET_SCRIPT = """
import sys
if sys.argv[1] == "mlflow-first":
    import mlflow  # noqa: F401
from orchestrator.tracking.ledger import Ledger
ledger = Ledger(sys.argv[2])
experiment_id = ledger.experiment_id("q", create=True)
run_id = ledger.create_run(experiment_id, "r", {"orch.role": "seed"}, {})
for i in range(3):
    ledger.log_text(run_id, "x" * 100, f"a{i}.txt")
ledger.client.download_artifacts(run_id, "", sys.argv[3])
print("downloaded")
"""


@pytest.mark.parametrize("order", ["ledger-first", "mlflow-first"])
def test_mlflow_prints_no_info_lines_or_progress_bars(tmp_path, order):
    import sys

    from conftest import REPO

    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_LOGGING_LEVEL", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    }
    proc = subprocess.run(
        [sys.executable, "-c", QUIET_SCRIPT, order, f"sqlite:///{tmp_path / 'mlflow.db'}", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "downloaded", proc.stderr
    assert "MLflow database tables" not in proc.stderr and "Downloading artifacts" not in proc.stderr, proc.stderr
    assert (tmp_path / "out" / "a2.txt").exists()
