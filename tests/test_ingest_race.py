"""Ingestion and a job's live push may insert the same metric rows at once: MLflow's SQL store drops exact
duplicates, but its check races the other writer's commit and raises a unique-constraint error. Ingestion
must ride that out (retry) and record every row once."""

from __future__ import annotations

import threading

from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from orchestrator.job import worker
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run
from orchestrator.tracking.ledger import Ledger


def _journaled_run(ledger: Ledger, root, steps: int = 5) -> tuple[str, RunDir]:
    run = Run("smoke", {"steps": steps, "noise": 0.1, "sleep_s": 0.0, "fail_at_step": None}, 0, "base")
    run_id = ledger.create_run(ledger.experiment_id("race", create=True), "r", {"orch.role": "seed"}, {})
    run_dir = RunDir(root / run.key)
    run_dir.create({"run": run.to_dict(), "run_id": run_id, "tracking_uri": ledger.uri, "cpus": 1, "gpus": 0})
    assert worker.execute(run_dir.path) == "FINISHED"
    return run_id, run_dir


def test_rows_already_recorded_by_another_writer_are_recorded_once(tmp_path):
    """The one-transaction writer (tracking/sqlwrite.py) meets rows another writer committed first: it rolls
    back and the client's deduplicating path records the rest."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'm.db'}")
    run_id, run_dir = _journaled_run(ledger, tmp_path)
    assert ledger._sql is not None
    assert ledger.ingest(run_dir) == "FINISHED"
    run_dir.cursor.unlink()  # as if a pusher had sent every row: the same rows again, same timestamps
    assert ledger.ingest(run_dir) == "FINISHED"
    history = ledger.client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == list(range(5))  # every step once
    assert ledger.get(run_id).status == "FINISHED"


def test_ingest_retries_when_the_live_pusher_inserted_the_same_rows_first(tmp_path, monkeypatch):
    ledger = Ledger(f"sqlite:///{tmp_path / 'm.db'}")
    ledger._writer = None  # the client's path, as through a tracking server
    run_id, run_dir = _journaled_run(ledger, tmp_path)
    real = ledger.client.log_batch
    calls = {"n": 0}

    def racing(run_id, metrics=(), params=(), tags=()):
        calls["n"] += 1
        if calls["n"] == 1 and metrics:  # the pusher's identical rows landed between MLflow's check and insert
            real(run_id, metrics=list(metrics))
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: metrics.key, metrics.timestamp")
        return real(run_id, metrics=list(metrics), params=list(params), tags=list(tags))

    monkeypatch.setattr(ledger.client, "log_batch", racing)
    assert ledger.ingest(run_dir) == "FINISHED"
    assert calls["n"] >= 2
    history = ledger.client.get_metric_history(run_id, "loss")
    assert sorted(m.step for m in history) == list(range(5))  # every step once


def test_two_writers_sending_the_same_rows_at_once_record_them_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    ledgers = [Ledger(uri), Ledger(uri)]
    run_id = ledgers[0].create_run(ledgers[0].experiment_id("race", create=True), "r", {}, {}, status="RUNNING")
    for round_ in range(10):
        rows = [
            Metric("loss", 1.0 / (i + 1), 1_700_000_000_000 + round_ * 1000 + i, round_ * 1000 + i) for i in range(200)
        ]
        start = threading.Barrier(2)
        errors: list[BaseException] = []

        def send(ledger: Ledger, start=start, rows=rows, errors=errors) -> None:
            start.wait()
            try:
                ledger._log_batch(run_id, rows)
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=send, args=(ledger,)) for ledger in ledgers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
    assert len(ledgers[0].client.get_metric_history(run_id, "loss")) == 10 * 200


def test_runs_written_through_the_client_go_side_by_side_and_one_failure_keeps_the_others(tmp_path, monkeypatch):
    """Through a tracking server each run is its own requests: the runs that ended together are sent in
    parallel (one after another, each waited for the previous round trip), and a run whose write fails keeps
    its cursor (retried at the next ingestion) without costing the others theirs."""
    ledger = Ledger(f"sqlite:///{tmp_path / 'm.db'}")
    ledger._writer = None  # the client's path, as through a tracking server
    made = [_journaled_run(ledger, tmp_path / str(i)) for i in range(4)]
    doomed = made[2][0]
    real = ledger._record_one
    threads: set[str] = set()

    def record(write):
        threads.add(threading.current_thread().name)
        if write.run_id == doomed:
            raise MlflowException("the server answered 503")
        real(write)

    monkeypatch.setattr(ledger, "_record_one", record)
    try:
        ledger.ingest_many([run_dir for _, run_dir in made])
        raise AssertionError("the failed run's error was swallowed")
    except MlflowException as err:
        assert "503" in str(err)
    assert len(threads) > 1 and all(name.startswith("orch-ingest") for name in threads)
    for run_id, run_dir in made:
        recorded = ledger.get(run_id)
        if run_id == doomed:
            assert not run_dir.cursor.exists() and recorded.status != "FINISHED"
        else:
            assert run_dir.read_cursor()["ended"] == "FINISHED" and recorded.status == "FINISHED"
    monkeypatch.setattr(ledger, "_record_one", real)
    assert ledger.ingest_many([run_dir for _, run_dir in made]) == ["FINISHED"] * 4  # the failed one, now
    assert ledger.get(doomed).status == "FINISHED"
