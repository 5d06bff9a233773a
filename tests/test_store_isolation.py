"""No command touches another store's data: `orch delete` removes only the run directories this store's runs
created, and `orch import` checks a whole bundle (damaged, hostile, its own store's) before writing anything."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Store

SMOKE = {"name": "iso", "workload": "smoke", "params": {"steps": 3}}


@pytest.fixture
def exported(tmp_path) -> tuple[Store, Path, list[Path]]:
    """A store with 2 finished seeds, exported to a bundle."""
    source = Store(tmp_path / "a")
    source.root.mkdir()
    source.orch("submit", str(source.spec(SMOKE)), "--seeds", "2", check=True)
    bundle = tmp_path / "bundle"
    source.orch("export", "iso", "-o", str(bundle), "--tracking-uri", source.uri, check=True)
    return source, bundle, [Path(r.tags["orch.run_dir"]) for r in source.seed_runs("iso")]


def _other(tmp_path) -> Store:
    other = Store(tmp_path / "b")
    other.root.mkdir()
    return other


def test_delete_of_an_imported_experiment_leaves_the_source_store_alone(exported, tmp_path):
    source, bundle, dirs = exported
    other = _other(tmp_path)
    other.orch("import", str(bundle), "--tracking-uri", other.uri, check=True)
    result = other.orch("delete", "iso", "--yes", "--tracking-uri", other.uri, check=True)
    assert "0 run directories" in " ".join(result.output.split())
    assert all(d.is_dir() and (d / "journal.jsonl").exists() for d in dirs)  # the source's runs are intact
    assert {r.status for r in source.seed_runs("iso")} == {"FINISHED"}


def test_a_crafted_run_directory_tag_deletes_nothing(exported, tmp_path):
    _, bundle, _ = exported
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "thesis.tex").write_text("years of work")
    (victim / "run.json").write_text(json.dumps({"run_id": "anything"}))
    for run_json in bundle.glob("runs/*/run.json"):
        run = json.loads(run_json.read_text())
        run["tags"]["orch.run_dir"] = str(victim)
        run["tags"].pop("orch.source_run_id", None)
        run_json.write_text(json.dumps(run))
    other = _other(tmp_path)
    other.orch("import", str(bundle), "--tracking-uri", other.uri, check=True)
    other.orch("delete", "iso", "--yes", "--tracking-uri", other.uri, check=True)
    assert (victim / "thesis.tex").read_text() == "years of work"


def _first_run(bundle: Path) -> Path:
    return sorted(bundle.glob("runs/*"))[0]


def _damage(kind: str, bundle: Path) -> None:
    meta = json.loads((bundle / "experiment.json").read_text())
    run = _first_run(bundle)
    if kind == "garbage experiment.json":
        (bundle / "experiment.json").write_bytes(b"\x00\xffnot json")
    elif kind == "missing run.json":
        (run / "run.json").unlink()
    elif kind == "garbage metrics":
        (run / "metrics.jsonl").write_text('["loss", 1.0, 0, 0]\n{"half": \n')
    elif kind == "bogus status":
        data = json.loads((run / "run.json").read_text())
        data["status"] = "DONE-ISH"
        (run / "run.json").write_text(json.dumps(data))
    elif kind == "missing run folder":
        shutil.rmtree(run)
    elif kind == "run outside the bundle":
        meta["runs"].append("../../outside")
        (bundle / "experiment.json").write_text(json.dumps(meta))
    elif kind == "name walks out":
        meta["name"] = "../../escaped"
        (bundle / "experiment.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "kind",
    [
        "garbage experiment.json",
        "missing run.json",
        "garbage metrics",
        "bogus status",
        "missing run folder",
        "run outside the bundle",
        "name walks out",
    ],
)
def test_a_damaged_bundle_is_refused_whole_before_anything_is_written(exported, tmp_path, kind):
    _, bundle, _ = exported
    _damage(kind, bundle)
    other = _other(tmp_path)
    result = other.orch("import", str(bundle), "--tracking-uri", other.uri)
    assert result.exit_code == 2, result.output
    assert "bundle" in result.output or "experiment name" in result.output
    assert "Traceback" not in result.output
    assert not other.seed_runs("iso") and not other.seed_runs("../../escaped")
    assert not (tmp_path / "escaped").exists() and not (other.root.parent / "escaped").exists()


def test_import_name_cannot_leave_the_store_and_a_self_import_is_refused(exported, tmp_path):
    source, bundle, _ = exported
    other = _other(tmp_path)
    result = other.orch("import", str(bundle), "--name", "../../escaped", "--tracking-uri", other.uri)
    assert result.exit_code == 2 and "--name" in result.output and not other.seed_runs("../../escaped")
    result = source.orch("import", str(bundle), "--name", "iso-again", "--tracking-uri", source.uri)
    assert result.exit_code == 2 and "exported from this store" in result.output
    assert len(source.seed_runs("iso")) == 2 and not source.seed_runs("iso-again")


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in [root, *root.rglob("*")] if not p.is_symlink()}


@pytest.mark.parametrize("umask, others, group", [(None, 0, 0), ("007", 0, 0o060)])
def test_the_store_is_private_to_its_owner_unless_a_lab_group_shares_it(tmp_path, umask, others, group):
    """Every file and directory orch and its jobs create: the sqlite store, run directories, journals,
    artifacts, logs. (The CLI as a user runs it, from a shell whose umask is the usual 022.)"""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ORCH_UMASK": umask} if umask else {k: v for k, v in os.environ.items() if k != "ORCH_UMASK"}
    store = Store(tmp_path / "s")
    store.root.mkdir()
    spec = store.spec(SMOKE)
    subprocess.run(
        f"umask 022 && {sys.executable} -m orchestrator submit {spec} --seeds 2 --tracking-uri {store.uri}",
        shell=True,
        cwd=store.root,
        env=env,
        check=True,
        capture_output=True,
        timeout=300,
    )
    made = {**_modes(store.workdir), "mlflow.db": (store.root / "mlflow.db").stat().st_mode & 0o777}
    made.update({f"artifacts/{k}": v for k, v in _modes(store.root / "artifacts").items()})
    assert len(made) > 10 and any("journal.jsonl" in k for k in made)
    assert {k: v for k, v in made.items() if v & 0o007 != others} == {}  # nothing for others
    if not group:
        assert {k: v for k, v in made.items() if v & 0o070} == {}  # nor for the group
    else:
        assert (made["mlflow.db"] & 0o060) == 0o060  # the lab's group can read and write the store


def test_a_bad_umask_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCH_UMASK", "rw-r--r--")
    store = Store(tmp_path)
    result = store.orch("ls")
    assert result.exit_code == 2 and "ORCH_UMASK" in result.output and "octal umask" in result.output


def test_export_returns_when_run_as_a_command(exported, tmp_path):
    """MLflow's artifact downloads leave a thread pool whose workers only stop from threading's exit hooks:
    the `orch` script printed "exported" and then waited on them forever (a cron job calling it hung)."""
    import subprocess
    import sys

    source, _, _ = exported
    orch = str(Path(sys.executable).with_name("orch"))
    result = subprocess.run(
        [orch, "export", "iso", "-o", str(tmp_path / "again"), "--tracking-uri", source.uri],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0 and "exported" in result.stdout, result.stderr


@pytest.mark.slow
def test_a_store_locked_by_another_process_is_one_clear_error(tmp_path):
    """Another process holds a write transaction past sqlite's 30 s busy timeout: one line, exit 1, no
    traceback (it was a raw "database is locked" after 29.9 s)."""
    import sqlite3
    import subprocess
    import sys

    store = Store(tmp_path)
    spec = store.spec(SMOKE)
    store.orch("submit", str(spec), "--seeds", "1", check=True)
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "orchestrator", "submit", str(spec), "--seeds", "2", "--tracking-uri", store.uri],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 1 and "stayed locked by another process" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert store.orch("submit", str(spec), "--seeds", "2").exit_code == 0  # once released: the rest goes on


def test_database_is_locked_reads_as_a_storage_error():
    from orchestrator.errors import StorageError, storage_error

    err = storage_error(RuntimeError("(sqlite3.OperationalError) database is locked"))
    assert isinstance(err, StorageError) and "stayed locked" in str(err)
    assert storage_error(RuntimeError("something else")) is None


def test_cancel_during_a_first_submit_waits_for_it_instead_of_saying_there_is_no_store(tmp_path):
    """A first submission starts its runs before its store exists; its lock file says it is on its way."""
    import subprocess
    import sys
    import time

    from orchestrator.tracking.lock import submit_lock

    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    lock = submit_lock("iso", uri, tmp_path).acquire()
    try:
        cancel = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "cancel", "iso", "--tracking-uri", uri],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(3)
        assert cancel.poll() is None  # waiting for the submission, not answering "no MLflow store"
    finally:
        lock.release()
    out, _ = cancel.communicate(timeout=60)
    assert cancel.returncode == 2 and "no MLflow store" in out  # the lock let go, still no store: now it says so


def test_importing_twice_says_nothing_new_was_added(exported, tmp_path):
    _, bundle, _ = exported
    other = _other(tmp_path)
    first = other.orch("import", str(bundle), "--tracking-uri", other.uri, check=True)
    again = other.orch("import", str(bundle), "--tracking-uri", other.uri, check=True)
    assert "imported 3 new runs" in " ".join(first.output.split())  # 2 seeds and their group
    text = " ".join(again.output.split())
    assert "imported 0 new runs" in text and "3 imported before" in text
