"""orch core end to end, on a real MLflow sqlite store: reconcile, failures, concurrency, SIGKILL,
Ctrl-C, determinism, resume, `orch run`, `orch sync`, `orch logs`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ORCH, REPO
from support import wait_for

from orchestrator.job import worker
from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run

SMOKE = {"name": "core", "workload": "smoke", "params": {"steps": 5, "noise": 0.1}}


def history(store, run_id: str, metric: str = "loss") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in store.ledger().client.get_metric_history(run_id, metric))


def by_seed(records):
    return {int(r.tags["orch.seed"]): r for r in records}


def worker_pids(workdir: Path) -> dict[str, int]:
    pids = {}
    for journal in workdir.glob("*/*/journal.jsonl"):
        records, _ = read_journal(journal)
        starts = [r for r in records if r["event"] == "start"]
        if starts:
            pids[journal.parent.name] = starts[-1]["pid"]
    return pids


def test_submit_then_more_seeds_runs_only_the_missing_ones(store):
    path = store.spec(SMOKE)
    store.orch("submit", str(path), "--seeds", "5", check=True)
    first = store.seed_runs("core")
    assert len(first) == 5 and {r.status for r in first} == {"FINISHED"}
    result = store.orch("submit", str(path), "--seeds", "8", check=True)
    assert "3 to run" in " ".join(result.output.split())
    second = store.seed_runs("core")
    assert len(second) == 8 and len({r.key for r in second}) == 8
    assert {r.run_id for r in first} <= {r.run_id for r in second}  # nothing repeated
    store.orch("submit", str(path), "--seeds", "8", check=True)
    assert len(store.seed_runs("core")) == 8
    parents = store.ledger().runs(second[0].tags and store.ledger().experiment_id("core"), role="group")
    assert len(parents) == 1 and parents[0].status == "FINISHED"
    assert all(r.tags["mlflow.parentRunId"] == parents[0].run_id for r in second)
    for tag in (
        "orch.key",
        "orch.group",
        "orch.variant",
        "orch.seed",
        "orch.workload",
        "orch.backend",
        "orch.git_commit",
        "orch.git_dirty",
        "orch.pkg.mlflow",
    ):
        assert tag in second[0].tags, tag
    artifacts = {a.path for a in store.ledger().client.list_artifacts(parents[0].run_id)}
    assert "spec.yaml" in artifacts


def test_a_failed_run_is_rerun_and_a_finished_one_never(store):
    path = store.spec({**SMOKE, "params": {"steps": 5, "noise": 0.1, "checkpoint_every": 1000}})  # no checkpoint
    store.orch("submit", str(path), "--seeds", "3", check=True)
    runs = by_seed(store.seed_runs("core"))
    store.ledger().set_status(runs[1].run_id, "FAILED", "pretend the node died")
    store.orch("submit", str(path), "--seeds", "3", check=True)
    after = store.seed_runs("core")
    assert len(after) == 4  # the failed record is kept as history, one new run for seed 1
    reruns = [r for r in after if r.tags["orch.seed"] == "1" and r.status == "FINISHED"]
    assert len(reruns) == 1 and reruns[0].run_id != runs[1].run_id
    assert {r.run_id for r in after if r.tags["orch.seed"] != "1"} == {runs[0].run_id, runs[2].run_id}
    assert history(store, reruns[0].run_id) == history(store, runs[1].run_id)  # same seed, same curve


def test_failures_are_recorded_and_do_not_touch_other_runs(store):
    path = store.spec(
        {**SMOKE, "variants": {"ok": {}, "boom": {"fail_at_step": 2}, "nan": {"nan_at_step": 3}}, "seeds": 2}
    )
    result = store.orch("submit", str(path))
    assert result.exit_code == 1
    runs = store.seed_runs("core")
    status = {(r.tags["orch.variant"], r.tags["orch.seed"]): r for r in runs}
    assert {status[("ok", s)].status for s in "01"} == {"FINISHED"}
    boom = status[("boom", "0")]
    assert boom.status == "FAILED" and "failing at step 2" in boom.tags["orch.error"]
    traceback = store.ledger().client.download_artifacts(boom.run_id, "traceback.txt", str(store.root))
    assert "RuntimeError" in Path(traceback).read_text()
    assert [s for s, _ in history(store, boom.run_id)] == [0, 1]  # what it logged before failing is kept
    nan = status[("nan", "1")]
    assert nan.status == "FAILED" and "NaN" in nan.tags["orch.error"]


def test_sixteen_concurrent_runs_lose_no_metric(store):
    path = store.spec({**SMOKE, "params": {"steps": 300, "noise": 0.1, "checkpoint_every": 100}, "seeds": 16})
    store.orch("submit", str(path), "--max-parallel", "16", check=True)
    runs = store.seed_runs("core")
    assert len(runs) == 16
    for run in runs:
        steps = [s for s, _ in history(store, run.run_id)]
        assert steps == list(range(300)), run.run_id


def test_same_seed_same_metrics_and_orch_run_equals_the_local_backend(store, tmp_path):
    path = store.spec(SMOKE)
    store.orch("submit", str(path), "--seeds", "2", check=True)
    local = by_seed(store.seed_runs("core"))
    other = type(store)(tmp_path / "other")
    other.root.mkdir()
    other_path = other.spec(SMOKE)
    other.orch("submit", str(other_path), "--seeds", "2", check=True)
    again = by_seed(other.seed_runs("core"))
    for seed in (0, 1):
        assert history(store, local[seed].run_id) == history(other, again[seed].run_id)
    assert history(store, local[0].run_id) != history(store, local[1].run_id)
    refused = store.orch("run", str(path), "--seed", "1")  # finished already: one run per key
    assert refused.exit_code == 2 and "already FINISHED" in refused.output and "--force" in refused.output
    expected = history(store, local[1].run_id)
    result = store.orch("run", str(path), "--seed", "1", "--force", check=True)
    assert "FINISHED" in result.output
    runs = store.seed_runs("core")
    debug = [r for r in runs if r.tags.get("orch.via") == "orch run"]
    assert len(debug) == 1 and debug[0].key == local[1].key
    assert history(store, debug[0].run_id) == expected
    assert debug[0].metrics["final_loss"] == local[1].metrics["final_loss"]
    assert len(runs) == 2 and local[1].run_id not in {r.run_id for r in runs}  # superseded: counted once
    assert store.ledger().get(local[1].run_id).tags["orch.superseded_by"] == debug[0].run_id


@pytest.mark.slow
def test_sigkilled_worker_is_recorded_killed_not_left_running(store):
    # Long runs (200 s): the survivor must still be running at the Ctrl-C even when a loaded machine starts
    # the two workers many seconds apart; Ctrl-C ends the test long before.
    path = store.spec({**SMOKE, "params": {"steps": 4000, "sleep_s": 0.05}, "seeds": 2})
    proc = store.orch_process("submit", str(path), "--max-parallel", "2")
    pids = wait_for(lambda: len(worker_pids(store.workdir)) == 2 and worker_pids(store.workdir), what="workers")
    victim_key, victim_pid = sorted(pids.items())[0]
    time.sleep(0.5)
    os.kill(victim_pid, signal.SIGKILL)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)  # then Ctrl-C the orchestrator: the other run must end KILLED too
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    runs = {r.key: r for r in store.seed_runs("core")}
    assert runs[victim_key].status == "KILLED" and "SIGKILL" in runs[victim_key].tags["orch.error"]
    assert {r.status for r in runs.values()} == {"KILLED"}
    assert all(len(history(store, r.run_id)) > 0 for r in runs.values())  # what they logged is kept


def test_a_dead_orchestrator_leaves_nothing_running_and_resume_continues_the_same_run(store):
    path = store.spec({**SMOKE, "params": {"steps": 60, "sleep_s": 0.05, "checkpoint_every": 10}, "seeds": 1})
    proc = store.orch_process("submit", str(path))
    run_dir_path = wait_for(lambda: next(iter(store.workdir.glob("*/*/checkpoint.pkl")), None), what="a checkpoint")
    time.sleep(0.3)
    pid = worker_pids(store.workdir)[run_dir_path.parent.name]
    proc.kill()  # SIGKILL the orchestrator, then its worker: nobody is left to record the end
    os.kill(pid, signal.SIGKILL)
    proc.wait(timeout=30)
    (running,) = store.seed_runs("core")
    assert running.status in ("RUNNING", "SCHEDULED")
    result = store.orch("status", "core", "--json", check=True)
    (group,) = json.loads(result.output)["groups"]
    assert group["killed"] == 1 and group["failed"] == 0 and group["running"] == 0  # its own column, not "failed"
    table = store.orch("status", "core", check=True).output
    assert "┃ failed ┃ killed ┃" in table and "│      0 │      1 │" in table  # failed 0, killed 1
    (killed,) = store.seed_runs("core")
    assert killed.status == "KILLED"
    store.orch("submit", str(path), check=True)  # resumes from the checkpoint, in the same MLflow run
    (resumed,) = store.seed_runs("core")
    assert resumed.run_id == killed.run_id and resumed.status == "FINISHED"
    assert int(resumed.tags["orch.resumed_from_step"]) >= 9
    reference = type(store)(store.root / "reference")
    reference.root.mkdir()
    reference.orch(
        "submit",
        str(reference.spec({**SMOKE, "params": {"steps": 60, "sleep_s": 0.0, "checkpoint_every": 10}})),
        check=True,
    )
    (uninterrupted,) = reference.seed_runs("core")
    assert history(store, resumed.run_id) == history(reference, uninterrupted.run_id)
    assert resumed.metrics["final_loss"] == uninterrupted.metrics["final_loss"]


def test_sync_ingests_journals_written_without_the_orchestrator_idempotently(store):
    path = store.spec(SMOKE)
    store.orch("submit", str(path), "--seeds", "1", check=True)
    (run,) = store.seed_runs("core")
    # a job that ran where MLflow was unreachable: its run directory has a journal nobody ingested
    ledger = store.ledger()
    offline = Run(
        "smoke",
        run.tags and json.loads(RunDir(Path(run.tags["orch.run_dir"])).spec_file.read_text())["run"]["params"],
        7,
        "base",
    )
    run_id = ledger.create_run(
        ledger.experiment_id("core"), "offline", {"orch.role": "seed", "orch.key": offline.key}, {}
    )
    run_dir = RunDir(store.workdir / "core" / offline.key)
    run_dir.create({"run": offline.to_dict(), "run_id": run_id, "tracking_uri": store.uri, "cpus": 1, "gpus": 0})
    assert worker.execute(run_dir.path) == "FINISHED"
    assert history(store, run_id) == []
    for _ in range(2):
        result = store.orch("sync", "--workdir", str(store.workdir), check=True)
    assert [s for s, _ in history(store, run_id)] == list(range(5))  # synced twice, recorded once
    assert ledger.get(run_id).status == "FINISHED"
    assert "synced" in result.output


def test_logs_and_workloads_commands(store):
    path = store.spec({**SMOKE, "params": {"steps": 2, "fail_at_step": 1}})
    submitted = store.orch("submit", str(path))
    (run,) = store.seed_runs("core")
    summary = " ".join(submitted.output.split())
    assert submitted.exit_code == 1 and run.run_id in summary and "failing at step 1" in summary  # why, at the end
    result = store.orch("logs", run.run_id, check=True)
    assert "failing at step 1" in result.output and "FAILED" in result.output
    assert "traceback" in result.output and "Traceback (most recent call last)" in result.output
    assert "Traceback (most recent call last)" in store.orch("logs", run.run_id, "-f", check=True).output  # ended
    result = store.orch("logs", run.key, check=True)
    assert run.run_id in result.output
    assert store.orch("logs", "nonexistent").exit_code == 2
    result = store.orch("workloads", check=True)
    assert "smoke" in result.output and "fail_at_step" in result.output


@pytest.mark.parametrize("command", ["status", "cancel"])
def test_unknown_experiment_is_a_clear_error(store, command):
    store.ledger()  # an existing, empty store
    result = store.orch(command, "no-such-experiment")
    assert result.exit_code == 2 and "no experiment named 'no-such-experiment'" in result.output


def test_read_only_commands_do_not_create_a_store(store):
    for args in (("status", "anything"), ("logs", "abc"), ("cancel", "anything")):
        result = store.orch(*args)
        assert result.exit_code == 2 and "no MLflow store" in result.output, result.output
    assert not (store.root / "mlflow.db").exists()


def test_a_deleted_run_directory_does_not_duplicate_steps(store):
    import shutil

    path = store.spec({**SMOKE, "params": {"steps": 5, "noise": 0.1, "checkpoint_every": 1000}})
    store.orch("submit", str(path), check=True)
    (run,) = store.seed_runs("core")
    store.ledger().set_status(run.run_id, "KILLED", "pretend")
    shutil.rmtree(run.tags["orch.run_dir"])
    store.orch("submit", str(path), check=True)
    for record in store.seed_runs("core"):
        steps = [s for s, _ in history(store, record.run_id)]
        assert steps == sorted(set(steps)) == list(range(5))


def test_fast_run_listing_equals_mlflow_search(store):
    path = store.spec({**SMOKE, "variants": {"ok": {}, "nan": {"nan_at_step": 2}}, "seeds": 2})
    store.orch("submit", str(path))
    ledger = store.ledger()
    experiment_id = ledger.experiment_id("core")
    for role in ("seed", "group"):
        fast = sorted(ledger.runs(experiment_id, role), key=lambda r: r.run_id)
        slow = sorted(
            ledger.client.search_runs([experiment_id], f"tags.`orch.role` = '{role}'"), key=lambda r: r.info.run_id
        )
        assert [r.run_id for r in fast] == [r.info.run_id for r in slow] and len(fast) == (4 if role == "seed" else 2)
        for mine, theirs in zip(fast, slow, strict=False):
            assert (mine.status, mine.tags, mine.start_time) == (
                theirs.info.status,
                theirs.data.tags,
                theirs.info.start_time,
            )
            assert json.dumps(mine.metrics, sort_keys=True) == json.dumps(
                theirs.data.metrics, sort_keys=True
            )  # NaN too


def test_set_threads_resizes_blas_pools_already_loaded():
    """A forkserver child has numpy's OpenBLAS loaded, sized for the whole machine: set_threads must shrink
    the live pool, not only the environment (two runs side by side would spin 2x the cores' threads)."""
    code = (
        "import numpy, torch\n"
        "from threadpoolctl import threadpool_info\n"
        "from orchestrator.job.worker import set_threads\n"
        "set_threads(1)\n"
        "import json\n"
        "blas = [p['num_threads'] for p in threadpool_info() if p['user_api'] == 'blas']\n"
        "print(json.dumps([blas, torch.get_num_threads()]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["OPENBLAS_NUM_THREADS"] = "2"  # as if the machine default were 2 cores' worth
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    ).stdout
    blas, torch_threads = json.loads(out)
    assert blas and set(blas) == {1} and torch_threads == 1


def test_the_python_api_submits_reads_and_compares_like_the_cli(store):
    import orchestrator

    path = store.spec({**SMOKE, "variants": {"low": {"noise": 0.0}, "high": {"noise": 0.5}}})
    submission = orchestrator.submit(path, seeds=3, tracking_uri=store.uri)
    assert len(submission.prepared) == 6 and submission.reconciled is not None
    state = orchestrator.status("core", tracking_uri=store.uri)
    assert {g.variant: g.finished for g in state.groups} == {"low": 3, "high": 3}
    again = orchestrator.plan_submission(path, seeds=3, tracking_uri=store.uri)
    assert len(again.reconcile().done) == 6 and again.launch() == []  # nothing is repeated
    report = orchestrator.compare("core", baseline="low", log=False, tracking_uri=store.uri)
    assert [g.name for g in report.groups] == ["low", "high"] and all(g.summary.n == 3 for g in report.groups)


def test_status_shows_a_run_running_as_soon_as_its_journal_says_it_started(store, tmp_path):
    from orchestrator import driver
    from orchestrator.backends.base import make as make_backend
    from orchestrator.job.journal import JournalWriter

    ledger = store.ledger()
    run = Run("smoke", {"steps": 3}, 0, "base")
    run_dir = RunDir(tmp_path / "r")
    run_id = ledger.create_run(
        ledger.experiment_id("starting", create=True),
        "r",
        {
            "orch.role": "seed",
            "orch.key": run.key,
            "orch.run_dir": str(run_dir.path),
            "orch.backend": "local",
            "orch.job_id": "elsewhere:1",
        },
        {},
    )
    run_dir.create({"run": run.to_dict(), "run_id": run_id, "tracking_uri": store.uri, "cpus": 1, "gpus": 0})
    journal = JournalWriter(run_dir.journal)
    journal.write("start", attempt=1, pid=os.getpid(), host="h", resumed_from_step=None)  # a live pid: running
    journal.close()
    (record,) = driver.refresh(ledger, ledger.runs(ledger.experiment_id("starting")), make_backend)
    assert record.status == "RUNNING"


def test_logs_follow_prints_a_running_runs_output_until_it_ends(store):
    # 8 s: long enough to be seen RUNNING (local runs start before their records exist: api.launch)
    path = store.spec({**SMOKE, "params": {"steps": 16, "sleep_s": 0.5, "noise": 0.1}})
    submit = store.orch_process("submit", str(path))
    try:
        run = wait_for(
            lambda: next(iter(r for r in store.seed_runs("core") if r.status == "RUNNING"), None),
            timeout=60,
            what="a running run",
        )
        follow = subprocess.run(
            [*ORCH, "logs", run.key, "-f", "--tracking-uri", store.uri],
            cwd=store.root,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert follow.returncode == 0, follow.stderr
        # -f returned only once the run had ended
        assert RunDir(Path(run.tags["orch.run_dir"])).journal.read_text().count('"event": "end"') == 1
    finally:
        submit.wait(timeout=60)


def test_live_progress_shows_each_running_runs_step_and_rate(store):
    import orchestrator

    class Recorder:
        def __init__(self):
            self.seen = []

        def update(self, done, running, failed, killed, total, active, eta_s=None):
            self.seen += [a for a in active if a.step is not None]

    path = store.spec({**SMOKE, "params": {"steps": 8, "sleep_s": 0.4, "noise": 0.1}})
    sink = Recorder()
    orchestrator.submit(path, seeds=2, tracking_uri=store.uri, sink=sink)
    assert sink.seen, "no running run was ever shown with a step"
    assert {a.label for a in sink.seen} <= {"base/seed0", "base/seed1"}
    assert max(a.step for a in sink.seen) >= 2 and all(0 < a.rate < 10 for a in sink.seen)  # ~2.5 steps/s
    assert all("loss" in a.metrics for a in sink.seen)
    watched = store.orch("status", "core", "--watch", check=True)  # nothing runs: one picture, then it returns
    assert "nothing left to watch" in watched.output
    piped = subprocess.run(
        [*ORCH, "status", "core", "--watch", "--tracking-uri", store.uri],
        capture_output=True,
        text=True,
        cwd=store.root,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # a pipe, as in `orch status x --watch | tail` or a log file: the last picture ends its line
    assert piped.returncode == 0 and piped.stdout.endswith("nothing left to watch\n"), repr(piped.stdout[-200:])


def test_ls_and_delete(store):
    path = store.spec(SMOKE)
    store.orch("submit", str(path), "--seeds", "2", check=True)
    listed = " ".join(store.orch("ls", check=True).output.split())
    assert "core" in listed and "│ 2 │ 2 │ 1 │ 2 │" in listed  # 2 runs, 2 attempts, 1 group, 2 finished
    run_dirs = [Path(r.tags["orch.run_dir"]) for r in store.seed_runs("core")]
    assert all(d.exists() for d in run_dirs)
    assert store.orch("delete", "core").exit_code == 1  # not confirmed (no input): nothing deleted
    assert len(store.seed_runs("core")) == 2
    result = store.orch("delete", "core", "--yes", check=True)
    assert "3 MLflow runs, 2 run directories" in " ".join(result.output.split())  # 2 seeds and their group
    assert not any(d.exists() for d in run_dirs) and "core" not in store.orch("ls", check=True).output
    again = store.orch("submit", str(path), "--seeds", "2", check=True)  # the name is free: all runs again
    assert "2 to run" in " ".join(again.output.split())
    assert store.orch("delete", "nothere", "--yes").exit_code == 2


def test_ls_counts_run_keys_apart_from_their_attempts_and_dates_the_latest_event(store):
    """A failed run retried twice is one run of three attempts; the last activity is its last metric or end,
    not the last start."""
    from orchestrator import api

    params = {"steps": 3, "fail_at_step": 2, "checkpoint_every": 100}  # no checkpoint: each retry a new attempt
    path = store.spec({**SMOKE, "name": "retried", "params": params})
    for _ in range(3):
        assert store.orch("submit", str(path), "--seeds", "2").exit_code == 1
    summary = next(e for e in api.list_experiments(store.uri) if e.name == "retried")
    assert (summary.runs, summary.attempts, summary.groups, summary.finished) == (2, 6, 1, 0)
    ledger = store.ledger()
    runs = ledger.client.search_runs([ledger.experiment_id("retried")])
    ends = [r.info.end_time for r in runs if r.info.end_time]
    assert ends and summary.last_activity == max(ends + [r.info.start_time for r in runs]) / 1000
    assert summary.last_activity > max(r.info.start_time for r in runs) / 1000  # an end after the last start
    assert abs(summary.last_activity - time.time()) < 600
    listed = " ".join(store.orch("ls", check=True).output.split())
    assert "retried │ 2 │ 6 │ 1 │ 0 │" in listed


def test_status_and_an_idle_submit_import_no_mlflow(store):
    """The lever behind commands that answer in under a second: reads of an sqlite store go to the file."""
    path = store.spec(SMOKE)
    store.orch("submit", str(path), "--seeds", "2", check=True)
    code = (
        "import sys\nfrom orchestrator.cli import app\n"
        "for args in (['status', 'core'], ['submit', sys.argv[2]]):\n"
        "    try:\n        app([*args, '--tracking-uri', sys.argv[1]])\n    except SystemExit as e:\n"
        "        assert not e.code, e.code\n"
        "print('MLFLOW' if 'mlflow' in sys.modules else 'NO-MLFLOW')"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, store.uri, str(path)],
        cwd=store.root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO-MLFLOW") and "0 to run" in " ".join(out.stdout.split())


def test_orch_run_pdb_opens_a_post_mortem_at_the_failing_line(store):
    path = store.spec({**SMOKE, "params": {"steps": 3, "fail_at_step": 1}})
    out = subprocess.run(
        [*ORCH, "run", str(path), "--pdb", "--tracking-uri", store.uri],
        cwd=store.root,
        input="p step\nq\n",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.returncode == 1, out.stderr
    assert "(Pdb)" in out.stdout and "workloads/smoke" in out.stdout  # stopped in the workload's frame
    assert "(Pdb) 1\n" in out.stdout  # `p step` printed the failing step
    (run,) = store.seed_runs("core")
    assert run.status == "FAILED"  # recorded before the debugger opened
