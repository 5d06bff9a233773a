"""Faults that must leave right state: a torn journal line, an orchestrator and its worker killed with
SIGKILL, a resumed run that keeps an earlier attempt's error, Ctrl-C on queued runs, a reused pid. Each
checks that no journaled metric is lost or recorded twice (figures: docs/reliability.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from support import wait_for

from orchestrator.job.journal import JournalWriter, events, read_journal
from orchestrator.job.liveness import same_process, start_time
from orchestrator.job.rundir import umask
from orchestrator.tracking.records import Tag

TORN = '{"t": 1796156'  # what a full disk left of a line in the wild


def journal_of(store, name):
    return sorted((store.workdir / name).glob("*/journal.jsonl"))


def assert_each_step_once(ledger, run_id, metric, steps):
    history = ledger.client.get_metric_history(run_id, metric)
    counts = Counter(m.step for m in history)
    assert sorted(counts) == list(range(steps)), sorted(counts)
    assert set(counts.values()) == {1}, f"duplicated rows: {counts}"


# -- the journal on its own ------------------------------------------------------------------------
def test_a_writer_starts_on_a_fresh_line_after_a_torn_tail(tmp_path):
    path = tmp_path / "journal.jsonl"
    writer = JournalWriter(path)
    writer.write("start", attempt=1, pid=1, host="h")
    writer.close()
    with open(path, "a") as f:
        f.write(TORN)
    records, offset = read_journal(path)
    assert [r["event"] for r in records] == ["start"] and offset < path.stat().st_size  # torn tail: not read yet
    writer = JournalWriter(path)
    writer.write("end", status="KILLED", final={}, error="x")
    writer.close()
    skipped: list = []
    records, offset = read_journal(path, 0, skipped)
    assert [r["event"] for r in records] == ["start", "end"]
    assert offset == path.stat().st_size
    assert len(skipped) == 1 and skipped[0][1] == TORN.encode()
    assert path.read_text().count("\n") == 3


def test_a_reader_skips_lines_that_are_not_events(tmp_path):
    path = tmp_path / "journal.jsonl"
    path.write_text('{"t": 1, "event": "start"}\nnot json\n[1, 2]\n{"t": 2}\n{"t": 3, "event": "end"}\n')
    skipped: list = []
    records, _ = read_journal(path, 0, skipped)
    assert [r["t"] for r in records] == [1, 3] and len(skipped) == 3
    assert [r["t"] for r in events(path)] == [1, 3]


# -- liveness ----------------------------------------------------------------------------------------
def test_liveness_is_pid_and_start_time():
    me = os.getpid()
    began = start_time(me)
    assert began is not None and abs(began - time.time()) < 24 * 3600
    assert same_process(me, time.time())
    assert not same_process(me, began - 3600), "a process that started after the event is another one"
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not same_process(proc.pid, time.time()) and start_time(proc.pid) is None


# -- the whole flow, with real processes --------------------------------------------------------------
SLOW = {"name": "faults", "workload": "smoke", "params": {"steps": 40, "sleep_s": 0.1}, "seeds": 1}


def start_slow_submit(store, doc, *args):
    path = store.spec(doc)
    proc = store.orch_process("submit", str(path), *args, start_new_session=True)
    return path, proc


def metrics_lines(journal) -> int:
    return len(events(journal, "metrics")) if journal.exists() else 0


def test_sigkill_then_a_torn_line_then_status_and_resubmit(store):
    """The orchestrator and its worker die by SIGKILL mid-run; a full disk tore the journal's last line.
    `orch status` must close the run (no JSONDecodeError), and the resubmit must resume it in the same MLflow
    run, finish it with every step recorded once, and drop the killed attempt's error."""
    path, proc = start_slow_submit(store, SLOW)
    journal = wait_for(lambda: next(iter(journal_of(store, "faults")), None), timeout=120, what="a journal")
    wait_for(lambda: metrics_lines(journal) >= 5, timeout=120, what="some steps")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    worker = events(journal, "start")[-1]["pid"]
    wait_for(lambda: not same_process(worker, None), timeout=30, what="the worker gone")
    with open(journal, "a") as f:
        f.write(TORN)
    logged = metrics_lines(journal)

    result = store.orch("status", "faults")
    assert result.exit_code == 0, result.output
    (record,) = store.seed_runs("faults")
    assert record.status == "KILLED" and record.tags.get(Tag.ERROR)
    ledger = store.ledger()
    assert_each_step_once(ledger, record.run_id, "loss", logged)
    assert store.orch("status", "faults").exit_code == 0  # and again: the fragment stays skipped

    store.orch("submit", str(path), check=True)
    (again,) = store.seed_runs("faults")
    assert again.run_id == record.run_id and again.status == "FINISHED"
    assert Tag.ERROR not in ledger.get(again.run_id).tags, "a FINISHED run keeps no earlier attempt's error"
    assert_each_step_once(ledger, again.run_id, "loss", SLOW["params"]["steps"])


def test_ctrl_c_on_queued_runs_then_resubmit_makes_no_second_run(store):
    doc = {**SLOW, "name": "queued", "params": {"steps": 30, "sleep_s": 0.1}, "seeds": 3}
    path, proc = start_slow_submit(store, doc, "--max-parallel", "1")
    journal = wait_for(lambda: next(iter(journal_of(store, "queued")), None), timeout=120, what="the first journal")
    wait_for(lambda: metrics_lines(journal) >= 2, timeout=120, what="a step")
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130, out
    before = store.seed_runs("queued")
    assert len(before) == 3 and {r.status for r in before} == {"KILLED"}, [(r.status, r.tags) for r in before]
    store.orch("submit", str(path), check=True)
    after = store.seed_runs("queued")
    per_key = Counter(r.key for r in after)
    assert len(per_key) == 3 and set(per_key.values()) == {1}, per_key
    assert {r.run_id for r in after} == {r.run_id for r in before}, "the queued runs continue in their MLflow runs"
    assert {r.status for r in after} == {"FINISHED"}
    ledger = store.ledger()
    for record in after:
        assert_each_step_once(ledger, record.run_id, "loss", 30)
        assert Tag.ERROR not in ledger.get(record.run_id).tags


def test_the_launcher_starts_no_queued_run_once_a_worker_was_interrupted(tmp_path):
    """A terminal's Ctrl-C reaches the workers with the orchestrator. The worker it ended freed a slot; the
    launcher thread must not fill it before the orchestrator's handler cancels the queue (the run it started
    would be killed before its first checkpoint, and its resubmission would need a second MLflow run)."""
    from orchestrator.backends.local import LocalBackend
    from orchestrator.job.rundir import RunDir
    from orchestrator.job.worker import INTERRUPTED_EXIT

    class InterruptedWorker:
        exitcode, sentinel = INTERRUPTED_EXIT, None

        def is_alive(self) -> bool:
            return False

    backend = LocalBackend(1)
    backend._procs["interrupted"] = InterruptedWorker()  # type: ignore[assignment]
    queued = RunDir(tmp_path / "queued")
    backend._queue.append(queued)
    backend._launch_queued()  # returns: the free slot stays free
    assert list(backend._queue) == [queued] and set(backend._procs) == {"interrupted"}


def test_status_reports_an_undecodable_line_and_goes_on(store):
    path = store.spec({**SLOW, "name": "report", "params": {"steps": 3}})
    store.orch("submit", str(path), check=True)
    (journal,) = journal_of(store, "report")
    with open(journal, "a") as f:
        f.write(TORN + "\n" + json.dumps({"t": time.time(), "event": "checkpoint", "step": 2}) + "\n")
    (_record,) = store.seed_runs("report")
    from orchestrator.job.rundir import RunDir

    skipped: list = []
    read_journal(RunDir(journal.parent).journal, 0, skipped)
    assert len(skipped) == 1
    assert store.orch("status", "report").exit_code == 0
    assert store.seed_runs("report")[0].status == "FINISHED"


# -- checkpoints are pickles ------------------------------------------------------------------------------
def test_a_checkpoint_others_could_have_written_is_not_unpickled(tmp_path):
    import pickle
    import pwd
    import stat

    import pytest

    from orchestrator.job.context import RunContext
    from orchestrator.job.rundir import RunDir, UntrustedFile

    run_dir = RunDir(tmp_path / "r")
    run_dir.path.mkdir()
    ctx = RunContext(0, run_dir, JournalWriter(run_dir.journal))
    ctx.last_step = 3
    ctx.save_checkpoint({"w": 1})
    assert stat.S_IMODE(run_dir.checkpoint.stat().st_mode) == 0o644 & ~umask()
    assert ctx.load_checkpoint() == {"w": 1}  # the user's own, not writable by others: loaded
    run_dir.checkpoint.chmod(0o664)  # a group-writable lab workdir: anyone in the group could plant code
    with pytest.raises(UntrustedFile, match="writable by group or others"):
        ctx.load_checkpoint()
    run_dir.checkpoint.chmod(0o644)
    if os.geteuid() == 0:  # CI runs as root: a file of another user
        os.chown(run_dir.checkpoint, pwd.getpwnam("nobody").pw_uid, -1)
        with pytest.raises(UntrustedFile, match="owned by uid"):
            ctx.load_checkpoint()
    run_dir.checkpoint.unlink()
    (tmp_path / "elsewhere.pkl").write_bytes(pickle.dumps({"step": 1, "state": "x"}))
    run_dir.checkpoint.symlink_to(tmp_path / "elsewhere.pkl")
    with pytest.raises(OSError):  # a symlink is not followed
        ctx.load_checkpoint()
