"""`orch cancel` stops queued local runs for good, atomic files survive concurrent writers, a refused Slurm
requeue reaches orch.error, and Ctrl-C / MLflow leave orch's terminal clean (issue 15, items 2, 6, 9)."""

from __future__ import annotations

import threading
from pathlib import Path

from support import wait_for

from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir, atomic_write

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
        except BaseException as err:  # noqa: BLE001 - collected for the assertion below
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(tag,)) for tag in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_text() in ('{"a": 149}', '{"b": 149}')
    assert [p.name for p in tmp_path.iterdir()] == ["ingested.json"]  # no tmp file left behind
    assert oct(target.stat().st_mode & 0o777) == "0o644"


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
