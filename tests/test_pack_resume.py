"""A packed run that was cancelled or killed resumes in its next submission's pack, while a pack that is
requeued inside one submission never runs a run that already ended in it (job/pack.py: ended_since_armed)."""

from __future__ import annotations

from orchestrator.job.journal import JournalWriter, events
from orchestrator.job.pack import Pack
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run


def _arm(path) -> RunDir:
    run_dir = RunDir(path)
    run_dir.create(
        {"run": Run("smoke", {"steps": 3}, 0, "v").to_dict(), "run_id": "x", "experiment_id": "0", "cpus": 1, "gpus": 0}
    )
    return run_dir


def _starts(run_dir: RunDir) -> int:
    return sum(r["event"] == "start" for r in events(run_dir.journal))


def test_a_killed_packed_run_resumes_when_submitted_again(tmp_path):
    run_dir = _arm(tmp_path / "r")
    journal = JournalWriter(run_dir.journal)  # the earlier submission: started, then cancelled
    journal.write("start", attempt=1, pid=1, host="h", armed=run_dir.load().armed)
    journal.write("end", status="KILLED", final={}, error="cancelled")
    journal.close()
    run_dir = _arm(tmp_path / "r")  # the resubmission re-arms the directory
    assert Pack([str(run_dir.path)]).run() == ["FINISHED"]
    assert _starts(run_dir) == 2


def test_a_requeued_pack_does_not_run_twice_what_ended_in_its_submission(tmp_path):
    done, cancelled = _arm(tmp_path / "done"), _arm(tmp_path / "cancelled")
    assert Pack([str(done.path)]).run() == ["FINISHED"]
    cancelled.mark_cancelled("orch cancel")
    statuses = Pack([str(done.path), str(cancelled.path)]).run()  # the job requeued: the same pack again
    assert statuses[0] == "FINISHED" and _starts(done) == 1 and _starts(cancelled) == 0
