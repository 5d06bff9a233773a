"""Two `orch submit` of one spec at once, on one store: one MLflow run per key, one parent per group, each run
directory executed once. And the lock that makes it so (orchestrator/tracking/lock.py): taken with O_EXCL,
broken when its holder is gone (a dead pid here, a silent other host), never released by someone else."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter

import pytest

from orchestrator.errors import InputError
from orchestrator.job.journal import events
from orchestrator.tracking.lock import SubmitLock, submit_lock

SPEC = {
    "name": "race",
    "workload": "smoke",
    "params": {"steps": 6, "sleep_s": 0.05},
    "seeds": 4,
    "variants": {"a": {"offset": 0.0}, "b": {"offset": 1.0}},
}


def count_per_key(store):
    runs = store.seed_runs(SPEC["name"])
    return Counter(r.key for r in runs), runs


def test_two_submits_at_once_make_one_run_per_key(store):
    path = store.spec(SPEC)
    procs = [store.orch_process("submit", str(path)) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    per_key, runs = count_per_key(store)
    assert len(per_key) == 8 and set(per_key.values()) == {1}, per_key
    assert {r.status for r in runs} == {"FINISHED"}
    ledger = store.ledger()
    parents = ledger.runs(ledger.experiment_id(SPEC["name"]), role="group")
    assert len(parents) == 2, [p.tags for p in parents]
    for record in runs:  # each run directory executed once: one `start`, one `end`, one final metric row
        journal = store.workdir / SPEC["name"] / record.key / "journal.jsonl"
        assert len(events(journal, "start")) == 1 and len(events(journal, "end")) == 1
        history = ledger.client.get_metric_history(record.run_id, "final_loss")
        assert len(history) == 1, history
    # the second submission waited, then found the first's runs queued or done instead of making them again
    assert any("0 to run" in out for out in outputs), outputs
    assert not list((store.root / "locks").glob("*.lock")), "the lock is released"


@pytest.mark.slow
def test_three_submits_at_once_then_one_more(store):
    path = store.spec({**SPEC, "name": "race3", "params": {"steps": 3}})
    procs = [store.orch_process("submit", str(path)) for _ in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    store.orch("submit", str(path), check=True)
    per_key = Counter(r.key for r in store.seed_runs("race3"))
    assert len(per_key) == 8 and set(per_key.values()) == {1}, per_key


# -- the lock itself --------------------------------------------------------------------------------------
def test_lock_is_exclusive_and_released(tmp_path):
    lock = SubmitLock(tmp_path / "x.lock", "x", wait_s=0.5)
    with lock:
        holder = json.loads((tmp_path / "x.lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(InputError, match=f"pid {os.getpid()}"):
            SubmitLock(tmp_path / "x.lock", "x", wait_s=0.5).acquire()
    assert not (tmp_path / "x.lock").exists()


def test_a_dead_holder_on_this_host_is_broken(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname(), "at": time.time(), "token": "old"}))
    with SubmitLock(path, "x", wait_s=5) as lock:
        assert json.loads(path.read_text())["token"] == lock.token


def test_a_reused_pid_does_not_keep_a_lock(tmp_path):
    """The holder's pid is alive, but that process started after the lock was taken: another process."""
    path = tmp_path / "x.lock"
    path.write_text(
        json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "at": 1000.0, "started": 1000.0, "token": "old"})
    )
    with SubmitLock(path, "x", wait_s=5) as lock:
        assert json.loads(path.read_text())["token"] == lock.token


def test_another_host_holds_until_its_heartbeat_stops(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "at": time.time(), "token": "theirs"}))
    with pytest.raises(InputError, match="elsewhere"):
        SubmitLock(path, "x", wait_s=0.5, stale_s=60).acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))  # its host stopped refreshing the file an hour ago
    with SubmitLock(path, "x", wait_s=5, stale_s=60) as lock:
        assert json.loads(path.read_text())["token"] == lock.token


def test_the_heartbeat_keeps_a_long_hold_fresh(tmp_path):
    path = tmp_path / "x.lock"
    with SubmitLock(path, "x", heartbeat_s=0.05):
        old = time.time() - 3600
        os.utime(path, (old, old))
        time.sleep(0.3)
        assert time.time() - path.stat().st_mtime < 5


def test_release_never_removes_another_holders_lock(tmp_path):
    path = tmp_path / "x.lock"
    lock = SubmitLock(path, "x").acquire()
    lock._stop.set()
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "at": time.time(), "token": "theirs"}))
    lock.release()
    assert json.loads(path.read_text())["token"] == "theirs"


def test_the_lock_of_an_sqlite_store_sits_beside_it(tmp_path):
    lock = submit_lock("exp", f"sqlite:///{tmp_path}/mlflow.db", tmp_path / "jobs")
    assert lock.path == tmp_path / "locks" / "exp.submit.lock"
    lock = submit_lock("exp", "http://127.0.0.1:5000", tmp_path / "jobs")
    assert lock.path == tmp_path / "jobs" / "exp" / "exp.submit.lock"


def test_a_waiting_submit_says_what_it_waits_for(tmp_path, caplog):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": 1, "host": "elsewhere", "at": time.time(), "token": "theirs"}))
    import orchestrator.tracking.lock as lock_module

    lock_module.TELL_AFTER_S, saved = 0.0, lock_module.TELL_AFTER_S
    try:
        with caplog.at_level("WARNING", logger="orch"), pytest.raises(InputError):
            SubmitLock(path, "experiment 'x'", wait_s=0.5).acquire()
    finally:
        lock_module.TELL_AFTER_S = saved
    assert "waiting for another orch submit of experiment 'x' (pid 1 on elsewhere" in caplog.text
