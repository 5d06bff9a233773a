"""The lab's own code: a workload where it lives (import path, entry point), any command as a workload,
code snapshots that jobs run (not the live checkout), the provenance recorded, `orch reproduce`, and the
Python API (`orch.submit`, `orch.runs`, `orch.status`, `orch.compare`)."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import orch
from orchestrator import api
from orchestrator.job import snapshot

REPO = Path(__file__).resolve().parent.parent

_names = itertools.count()

TRAIN = """
from pydantic import BaseModel, ConfigDict

METRIC, MODE = "score", "max"
VERSION = {version}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = 0.1


def run(params, ctx):
    for step in range(3):
        ctx.log(step, score=params.lr * step + ctx.seed)
    if params.lr > 1:
        ctx.warn(f"lr {{params.lr}} is at the edge of what this model tolerates")
    return {{"score": params.lr * 2 + ctx.seed, "version": VERSION}}
"""


def lab_package(root: Path, version: int = 1) -> str:
    """A lab package outside orch, under a name unique to this test (modules stay imported in this process)."""
    name = f"lab{next(_names)}_{root.name.replace('-', '_')[:20]}"
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text(TRAIN.format(version=version))
    return name


def finals(store, experiment: str) -> dict[int, dict[str, float]]:
    return {int(r.tags["orch.seed"]): r.metrics for r in store.seed_runs(experiment)}


# -- workloads by import path and entry point ----------------------------------------------------------
def test_a_workload_by_import_path_runs_from_where_it_lives(store, monkeypatch):
    monkeypatch.chdir(store.root)
    package = lab_package(store.root)
    spec = store.spec({"name": "own", "workload": f"{package}.train", "params": {"lr": 0.5}})
    store.orch("submit", str(spec), "--seeds", "2", check=True)
    runs = store.seed_runs("own")
    assert {r.status for r in runs} == {"FINISHED"}
    assert finals(store, "own")[1]["score"] == 0.5 * 2 + 1 and finals(store, "own")[0]["version"] == 1
    assert runs[0].tags["orch.workload"] == f"{package}.train"
    assert runs[0].tags["orch.code_source"] == str((store.root / package).resolve())
    assert (store.workdir / ".code" / runs[0].tags["orch.code"] / package / "train.py").is_file()


PRELOADED = """
import os
import signal
import sys
import time
from pydantic import BaseModel

METRIC = "imported_in"
IMPORTED_IN = os.getpid()
MAIN_AT_IMPORT = id(sys.modules["__main__"])  # in the forkserver: the `orch` script's module, if it was imported


class Params(BaseModel):
    pass


def run(params, ctx):
    return {"imported_in": float(IMPORTED_IN), "ran_in": float(os.getpid()), "snapshot": float("/.code/" in __file__),
            "main_rerun": float(id(sys.modules["__main__"]) != MAIN_AT_IMPORT)}  # a child that ran the script again
"""


def test_local_runs_fork_from_a_process_that_imported_the_snapshot_and_the_main_script_once(store):
    """job/preload.py: the forkserver imports the workload from the submission's snapshot and the `orch`
    entry script once; each run's process is a fork of it and imports neither again."""
    package = lab_package(store.root)
    (store.root / package / "pre.py").write_text(PRELOADED)
    spec = store.spec({"name": "pre", "workload": f"{package}.pre", "seeds": 3})
    script = Path(sys.executable).with_name("orch")  # what users run: a script, re-run by each child before the fix
    subprocess.run(
        [str(script), "submit", str(spec), "--tracking-uri", store.uri],
        cwd=store.root,
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    rows = list(finals(store, "pre").values())
    assert len(rows) == 3 and len({r["imported_in"] for r in rows}) == 1  # one import, in the forkserver
    assert [(r["ran_in"] != r["imported_in"], r["snapshot"], r["main_rerun"]) for r in rows] == [(True, 1.0, 0.0)] * 3


def test_a_workload_warning_reaches_the_run_as_a_tag(store, monkeypatch):
    monkeypatch.chdir(store.root)
    package = lab_package(store.root)
    store.orch(
        "submit", str(store.spec({"name": "warn", "workload": f"{package}.train", "params": {"lr": 2.0}})), check=True
    )
    (run,) = store.seed_runs("warn")
    assert run.status == "FINISHED" and run.tags["orch.warning"] == "lr 2.0 is at the edge of what this model tolerates"
    assert "WARNING: lr 2.0" in Path(run.tags["orch.run_dir"], "stderr.log").read_text()


def test_bad_workload_modules_are_refused_before_anything_is_written(store, monkeypatch):
    monkeypatch.chdir(store.root)
    package = lab_package(store.root)
    (store.root / package / "broken.py").write_text("import numpy\nMETRIC = 'x'\n")  # no Params, no run
    cases = {
        f"{package}.nope": f"unknown workload '{package}.nope'",
        "smokee": "did you mean 'smoke'",
        f"{package}.broken": "does not define Params, run",
    }
    for workload, expected in cases.items():
        result = store.orch("submit", str(store.spec({"name": "bad", "workload": workload})))
        assert result.exit_code == 2, result.output
        assert expected in " ".join(result.output.split()) and "workload" in result.output
    assert not (store.root / "mlflow.db").exists() and not store.workdir.exists()


def test_an_entry_point_names_a_lab_workload(store, monkeypatch):
    monkeypatch.chdir(store.root)
    package = lab_package(store.root)
    site = store.root / "site"
    info = site / "lablib-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lablib\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[orch.workloads]\nmytask = {package}.train\n")
    monkeypatch.syspath_prepend(str(site))
    from orchestrator.spec import registry

    assert registry.registered()["mytask"] == f"{package}.train" and "mytask" in registry.available()
    store.orch("submit", str(store.spec({"name": "ep", "workload": "mytask"})), check=True)
    (run,) = store.seed_runs("ep")
    assert run.status == "FINISHED" and run.metrics["score"] == pytest.approx(0.2)


# -- code snapshots ------------------------------------------------------------------------------------
def edit_between_snapshot_and_start(store, spec: Path, module: Path, backend_options: list[str] | None = None):
    """Submit through the API's steps, editing the workload after the snapshot was taken (prepare) and
    before the backend starts anything: what a queued Slurm job meets when its author goes on working."""
    submission = api.plan_submission(spec, tracking_uri=store.uri, sets=backend_options)
    submission.reconcile()
    assert submission.backend is not None
    real_submit = submission.backend.submit

    def submit_after_editing(run_dirs):
        module.write_text(module.read_text().replace("VERSION = 1", "VERSION = 2"))
        return real_submit(run_dirs)

    submission.backend.submit = submit_after_editing  # type: ignore[method-assign]
    submission.launch()
    submission.follow()
    return submission


def test_a_job_runs_the_submitted_code_not_the_edited_checkout(store, monkeypatch):
    monkeypatch.chdir(store.root)
    package = lab_package(store.root)
    module = store.root / package / "train.py"
    spec = store.spec({"name": "snap", "workload": f"{package}.train", "seeds": 2})
    edit_between_snapshot_and_start(store, spec, module)
    assert "VERSION = 2" in module.read_text()
    assert {m["version"] for m in finals(store, "snap").values()} == {1.0}  # the submitted version ran
    first = {r.tags["orch.code"] for r in store.seed_runs("snap")}
    store.orch("submit", str(spec), "--seeds", "3", check=True)  # a new seed: the new code, a new snapshot
    runs = {int(r.tags["orch.seed"]): r for r in store.seed_runs("snap")}
    assert runs[2].metrics["version"] == 2 and runs[2].tags["orch.code"] not in first
    assert len(list((store.workdir / ".code").iterdir())) == 2  # identical code is stored once
    parent = store.ledger().runs(store.ledger().experiment_id("snap"), role="group")[0]
    artifacts = {a.path for a in store.ledger().client.list_artifacts(parent.run_id, "code")}
    assert {f"code/{digest}" for digest in first | {runs[2].tags["orch.code"]}} <= artifacts
    freeze = store.ledger().client.download_artifacts(
        parent.run_id, f"code/{runs[2].tags['orch.code']}/requirements.txt", str(store.root)
    )
    assert "mlflow==" in Path(freeze).read_text()


def test_snapshots_keep_git_files_and_new_untracked_ones_and_record_them_in_the_diff(tmp_path):
    repo = tmp_path / "lab"
    (repo / "mylab").mkdir(parents=True)
    (repo / "mylab" / "__init__.py").write_text("")
    (repo / "mylab" / "train.py").write_text("A = 1\n")
    (repo / ".gitignore").write_text("data/\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    (repo / "mylab" / "new_model.py").write_text("B = 2\n")  # untracked, not ignored: code that will run
    (repo / "mylab" / "data").mkdir()
    (repo / "mylab" / "data" / "big.bin").write_bytes(b"0" * 1000)  # ignored
    taken = snapshot.take(repo / "mylab", tmp_path / "store", "mylab")
    files = sorted(p.relative_to(Path(taken.path)).as_posix() for p in Path(taken.path).rglob("*") if p.is_file())
    assert files == ["mylab/__init__.py", "mylab/new_model.py", "mylab/train.py"]
    assert snapshot.take(repo / "mylab", tmp_path / "store", "mylab").digest == taken.digest
    from orchestrator.tracking import codeversion

    version = codeversion.of(repo / "mylab")
    assert version.dirty and "new_model.py" in version.diff and "+B = 2" in version.diff


# -- commands --------------------------------------------------------------------------------------------
SCRIPT = """
import json, os, sys, time
lr, seed = float(sys.argv[2]), int(sys.argv[4])
print("hello from train.py", lr, seed)
with open(os.environ["ORCH_METRICS"], "a") as f:
    f.write(json.dumps({"step": 0, "loss": 1.0 + lr + seed}) + "\\n")
import orch
orch.log(1, loss=0.5 + lr + seed, acc=0.25)
if lr > 1:
    sys.exit(3)
orch.final(loss=0.1 + lr + seed)
"""


def command_spec(store, **extra):
    (store.root / "train.py").write_text(SCRIPT)
    return store.spec(
        {
            "name": "cmd",
            "command": ["python", "train.py", "--lr", "{lr}", "--seed", "{seed}"],
            "params": {"lr": 0.5},
            "metric": {"name": "loss", "mode": "min"},
            **extra,
        }
    )


def test_a_command_runs_with_its_params_and_reports_through_json_lines(store, monkeypatch):
    monkeypatch.chdir(store.root)
    spec = command_spec(store, grid={"lr": [0.5, 2.0]})
    result = store.orch("submit", str(spec), "--seeds", "2")
    assert result.exit_code == 1  # the lr = 2 runs exit 3
    runs = store.seed_runs("cmd")
    ok = {int(r.tags["orch.seed"]): r for r in runs if r.status == "FINISHED"}
    assert set(ok) == {0, 1}
    assert ok[1].metrics["loss"] == pytest.approx(0.1 + 0.5 + 1) and ok[1].metrics["acc"] == 0.25
    client = store.ledger().client
    history = sorted((m.step, m.value) for m in client.get_metric_history(ok[1].run_id, "loss"))
    assert (0, 2.5) in history and (1, 2.0) in history  # each line journaled at its step
    failed = [r for r in runs if r.status == "FAILED"]
    assert len(failed) == 2 and all("exited with status 3" in r.tags["orch.error"] for r in failed)
    logs = store.orch("logs", ok[1].run_id, check=True)
    assert "hello from train.py 0.5 1" in logs.output


def test_command_specs_are_checked_before_anything_is_written(store, monkeypatch):
    monkeypatch.chdir(store.root)
    cases = [
        ({"command": ["python", "t.py", "{lr}"], "params": {"lr": 1}}, "needs 'metric:"),
        (
            {"command": ["python", "t.py", "{lrr}"], "params": {"lr": 1}, "metric": {"name": "x"}},
            "placeholder '{lrr}' names no param",
        ),
        ({"command": [], "metric": {"name": "x"}}, "non-empty list"),
        ({"command": ["x"], "workload": "smoke", "metric": {"name": "x"}}, "exactly one of 'workload'"),
    ]
    for doc, expected in cases:
        result = store.orch("submit", str(store.spec({"name": "c", **doc})))
        assert result.exit_code == 2 and expected in " ".join(result.output.split()), result.output
    assert not (store.root / "mlflow.db").exists()


RESUMABLE = """
import json, os, sys
from pathlib import Path
import orch
state = orch.checkpoint_dir() / "step"
start = int(state.read_text()) + 1 if orch.resuming() else 0
for step in range(start, 6):
    orch.log(step, loss=1.0 / (step + 1))
    state.write_text(str(step))
    if step == 2 and not orch.resuming() and not Path(os.environ["ORCH_SUBMIT_DIR"], "go").exists():
        sys.exit("preempted")  # the first attempt dies after step 2, with a checkpoint
"""


def test_a_failed_command_resumes_from_its_checkpoint_dir_in_the_same_run(store, monkeypatch):
    monkeypatch.chdir(store.root)
    (store.root / "resume.py").write_text(RESUMABLE)
    spec = store.spec({"name": "res", "command": ["python", "resume.py"], "metric": {"name": "loss"}})
    failed = store.orch("submit", str(spec))
    assert failed.exit_code == 1, failed.output
    (first,) = store.seed_runs("res")
    assert first.status == "FAILED"
    (store.root / "go").write_text("")
    store.orch("submit", str(spec), check=True)
    (again,) = store.seed_runs("res")
    assert again.run_id == first.run_id and again.status == "FINISHED" and again.metrics["loss"] == 1 / 6
    history = {(m.step, m.value) for m in store.ledger().client.get_metric_history(again.run_id, "loss")}
    assert sorted(history) == [(s, 1.0 / (s + 1)) for s in range(6)]  # each step once (the final: the same row)


# -- reproduce and the Python API ------------------------------------------------------------------------
def test_reproduce_reruns_from_the_snapshot_and_compares_every_metric(store, monkeypatch):
    monkeypatch.chdir(store.root)
    package = lab_package(store.root)
    spec = store.spec({"name": "rep", "workload": f"{package}.train"})
    store.orch("submit", str(spec), check=True)
    (run,) = store.seed_runs("rep")
    (store.root / package / "train.py").write_text(TRAIN.format(version=7))  # the live code moved on
    result = store.orch("reproduce", run.run_id, "--json", check=True)
    report = json.loads(result.output)
    assert report["identical"] and report["compared"] == 3 + 2 and report["code"] == run.tags["orch.code"]
    (store.root / "clock.py").write_text("import orch, time\norch.log(0, t=time.time())\n")
    clock = store.spec({"name": "clock", "command": ["python", "clock.py"], "metric": {"name": "t"}}, name="c.yaml")
    store.orch("submit", str(clock), check=True)
    (timed,) = store.seed_runs("clock")
    differs = store.orch("reproduce", timed.run_id)
    assert differs.exit_code == 1 and "differs" in differs.output and "step 0 t" in differs.output


def test_the_python_api_submits_a_mapping_and_reads_one_row_per_run_key(store, monkeypatch):
    monkeypatch.chdir(store.root)
    doc = {
        "name": "nb",
        "workload": "smoke",
        "params": {"steps": 4},
        "workdir": str(store.workdir),
        "variants": {"low": {"offset": 0.0}, "high": {"offset": 1.0}},
    }
    submission = orch.submit(doc, seeds=3, tracking_uri=store.uri)
    assert len(submission.prepared) == 6 and submission.spec.source == "<spec mapping>"
    runs = orch.runs("nb", tracking_uri=store.uri)
    assert len(runs) == 6 and set(runs["status"]) == {"FINISHED"}
    assert set(runs["params.offset"]) == {0.0, 1.0} and runs["seed"].tolist() == [0, 1, 2, 0, 1, 2]
    report = orch.compare("nb", tracking_uri=store.uri, log=False)
    assert sum(len(g.values) for g in report.groups) == len(runs)
    status = orch.status("nb", tracking_uri=store.uri)
    assert sum(g.finished for g in status.groups) == 6
    bad = {**doc, "seeds": "three"}
    with pytest.raises(Exception) as err:
        orch.submit(bad, tracking_uri=store.uri)
    assert "<spec mapping>" in str(err.value) and "seeds" in str(err.value)


def test_orch_log_outside_orch_warns_once_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("ORCH_METRICS", raising=False)
    from orch import client

    monkeypatch.setattr(client, "_warned", False)
    orch.log(0, loss=1.0)
    orch.log(1, loss=0.5)
    assert capsys.readouterr().err.count("ORCH_METRICS is not set") == 1
    monkeypatch.setenv("ORCH_METRICS", str(tmp_path / "m.jsonl"))
    orch.log(2, loss=0.25)
    with pytest.raises(ValueError, match="NaN"):
        orch.log(3, loss=float("nan"))
    assert [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()] == [{"step": 2, "loss": 0.25}]


# -- on the dev Slurm ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slurm():
    from test_slurm import dev_slurm

    yield from dev_slurm()


def test_a_queued_slurm_job_runs_the_submitted_code(slurm, store, monkeypatch):
    monkeypatch.chdir(store.root)
    package = lab_package(store.root)
    module = store.root / package / "train.py"
    spec = store.spec({"name": "snap_slurm", "workload": f"{package}.train", "seeds": 2})
    edit_between_snapshot_and_start(store, spec, module, ["backend=slurm", "cluster=local-slurm"])
    runs = store.seed_runs("snap_slurm")
    assert {r.status for r in runs} == {"FINISHED"} and {r.tags["orch.backend"] for r in runs} == {"slurm"}
    assert {r.metrics["version"] for r in runs} == {1.0} and "VERSION = 2" in module.read_text()


STEPPING = """
import os, time
import orch
state = orch.checkpoint_dir() / "step"
start = int(state.read_text()) + 1 if orch.resuming() else 0
for step in range(start, 16):
    orch.log(step, loss=1.0 / (step + 1), resumed=float(orch.resuming()))
    state.write_text(str(step))
    time.sleep(0.4)
"""


def test_a_command_requeued_by_slurm_resumes_in_the_same_run(slurm, store, monkeypatch):
    from test_slurm import SLURM, status_until, wait_for

    from orchestrator.job.journal import read_journal

    monkeypatch.chdir(store.root)
    (store.root / "stepping.py").write_text(STEPPING)
    spec = store.spec({"name": "cmd_requeue", "command": ["python", "stepping.py"], "metric": {"name": "loss"}})
    store.orch("submit", str(spec), *SLURM, check=True)
    (run,) = store.seed_runs("cmd_requeue")
    journal = Path(run.tags["orch.run_dir"]) / "journal.jsonl"
    wait_for(
        lambda: any(r["event"] == "metrics" and r["step"] >= 4 for r in read_journal(journal)[0]),
        what="the command to log a few steps",
    )
    subprocess.run(["scancel", "--signal=USR2", run.tags["orch.job_id"]], check=True)
    (final,) = status_until(store, "cmd_requeue", {"FINISHED", "FAILED", "KILLED"})
    assert final.run_id == run.run_id and final.status == "FINISHED", final.tags.get("orch.error")
    events = [r["event"] for r in read_journal(journal)[0]]
    assert "requeue" in events and events.count("start") == 2
    client = store.ledger().client
    rows = {(m.step, m.value) for m in client.get_metric_history(run.run_id, "loss")}  # the final: the same row
    assert sorted(rows) == [(s, 1.0 / (s + 1)) for s in range(16)]  # every step once, across both attempts
    assert max(m.value for m in client.get_metric_history(run.run_id, "resumed")) == 1.0


def test_a_command_on_ray_gives_the_same_metrics_as_local(store, ray_local, monkeypatch):
    monkeypatch.chdir(store.root)
    spec = command_spec(store)
    store.orch("submit", str(spec), "--seeds", "2", check=True)

    def workload_metrics(record):  # system/* (CPU, memory, wall time) are the machine's, not the result's
        return {k: v for k, v in record.metrics.items() if not k.startswith("system/")}

    local = {int(r.tags["orch.seed"]): workload_metrics(r) for r in store.seed_runs("cmd")}
    ray_spec = command_spec(store)
    ray_spec.write_text(ray_spec.read_text().replace("name: cmd", "name: cmd_ray"))
    store.orch("submit", str(ray_spec), "--seeds", "2", "--backend", "ray", check=True)
    ray = {int(r.tags["orch.seed"]): r for r in store.seed_runs("cmd_ray")}
    assert {r.tags["orch.backend"] for r in ray.values()} == {"ray"}
    assert {seed: workload_metrics(r) for seed, r in ray.items()} == local


# -- the Python API from a plain script ------------------------------------------------------------------
UNGUARDED = """
import orch
submission = orch.submit({spec!r}, seeds=2, tracking_uri={uri!r})
print("submitted", sorted(orch.runs("api", tracking_uri={uri!r})["status"]), flush=True)
"""


@pytest.mark.parametrize("how", ["script", "-c"])
def test_the_readme_api_works_from_a_plain_script_without_a_main_guard(store, how):
    """The README's two lines saved as a file (or given to python -c): the runs' processes must not re-run the
    script, which would submit again from inside a run and wait forever for the lock its parent holds."""
    spec = store.spec({"name": "api", "workload": "smoke", "params": {"steps": 2}})
    code = UNGUARDED.format(spec=str(spec), uri=store.uri)
    (store.root / "s.py").write_text(code)
    argv = [sys.executable, "s.py"] if how == "script" else [sys.executable, "-c", code]
    result = subprocess.run(
        argv, cwd=store.root, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "submitted ['FINISHED', 'FINISHED']" in result.stdout


def test_ctrl_c_stops_a_plain_script_using_the_api(store):
    spec = store.spec({"name": "api", "workload": "smoke", "params": {"steps": 200, "sleep_s": 0.2}})
    (store.root / "s.py").write_text(UNGUARDED.format(spec=str(spec), uri=store.uri))
    proc = subprocess.Popen(
        [sys.executable, "s.py"],
        cwd=store.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(store.root.glob("jobs/api/*/journal.jsonl")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)  # stopped, not hung
    assert proc.returncode != 0 and "submitted" not in out
    assert {r.status for r in store.seed_runs("api")} <= {"KILLED", "FINISHED"}
