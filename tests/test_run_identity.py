"""Run identity that survives the code growing (docs/architecture.md, "Run identity"): a param added with a
default keeps every key and group; a changed default keeps the finished runs and says so, naming the field,
in submit, status and compare; an execution setting (marked in Params, or the spec's identity_exclude) is
not identity; a store written by key scheme 1 is reconciled without rerunning anything."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ORCH

from orchestrator.spec import identity
from orchestrator.tracking.records import Tag

REPO = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "key_scheme_1"

TRAIN = """
from pydantic import BaseModel, ConfigDict, Field
METRIC, MODE = "score", "max"

class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lr: float = {lr}
    steps: int = 3
    threads: int = Field(1, json_schema_extra={{"identity": False}})
{extra}
def run(params, ctx):
    for step in range(params.steps):
        ctx.log(step, score=params.lr * step + ctx.seed)
    return {{"score": params.lr * params.steps + ctx.seed}}
"""


def orch(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """The CLI as a fresh process: each one imports the workload as it is on disk now."""
    proc = subprocess.run(
        [*ORCH, *args, "--tracking-uri", f"sqlite:///{root / 'mlflow.db'}"],
        cwd=root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        timeout=300,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"orch {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def text(proc: subprocess.CompletedProcess) -> str:
    return " ".join((proc.stdout + proc.stderr).split())


@pytest.fixture
def lab(tmp_path):
    """A lab package (``ident_lab.train``) whose code the test edits between submissions, and its spec."""
    (tmp_path / "ident_lab").mkdir()
    (tmp_path / "ident_lab" / "__init__.py").write_text("")

    def write(lr: float = 0.1, extra: str = "") -> None:
        (tmp_path / "ident_lab" / "train.py").write_text(TRAIN.format(lr=lr, extra=extra))

    write()
    spec = {
        "name": "ident",
        "workload": "ident_lab.train",
        "workdir": str(tmp_path / "jobs"),
        "seeds": 2,
        "variants": {"short": {"steps": 2}, "long": {"steps": 4}},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return tmp_path, write


def seed_rows(root: Path, experiment: str) -> list[dict[str, str]]:
    """Every seed run's tags, straight from the store."""
    with sqlite3.connect(root / "mlflow.db") as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT r.run_uuid FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id JOIN tags t "
                "ON t.run_uuid = r.run_uuid WHERE e.name = ? AND t.key = 'orch.role' AND t.value = 'seed' "
                "AND r.lifecycle_stage = 'active'",
                (experiment,),
            )
        ]
        return [dict(conn.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (i,)).fetchall()) for i in ids]


def group_rows(root: Path, experiment: str) -> list[dict[str, str]]:
    with sqlite3.connect(root / "mlflow.db") as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT r.run_uuid FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id JOIN tags t "
                "ON t.run_uuid = r.run_uuid WHERE e.name = ? AND t.key = 'orch.role' AND t.value = 'group'",
                (experiment,),
            )
        ]
        return [dict(conn.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (i,)).fetchall()) for i in ids]


# -- the scheme, as functions ---------------------------------------------------------------------------
def test_a_param_at_its_default_is_left_out_of_identity_and_an_execution_setting_always_is():
    from pydantic import BaseModel, Field

    class Inner(BaseModel):
        size: int = 4
        cache: str = Field("/tmp", json_schema_extra={"identity": False})

    class Params(BaseModel):
        lr: float = 0.1
        inner: Inner = Inner()
        device: str = Field("auto", json_schema_extra={"identity": False})

    assert identity.excluded_paths(Params) == {"device", "inner.cache"}
    ident, defaulted = identity.split({"lr": 0.1, "inner": {"size": 8, "cache": "/x"}, "device": "cuda"}, Params)
    assert ident == {"inner.size": 8} and defaulted == {"lr": 0.1}
    assert identity.split({"lr": 1}, Params)[0] == {"lr": 1}  # 1 is not 0.1
    assert identity.split({"lr": 0.1, "inner": {"size": 4.0}}, Params)[0] == {}  # 4.0 is 4
    assert identity.drift({"lr": 0.1, "gone": 1}, {"lr": 0.2, "new": 3}) == {"lr": (0.1, 0.2)}


# -- through the CLI, as a lab meets it -----------------------------------------------------------------
def test_adding_a_param_with_a_default_reruns_nothing_and_keeps_one_group(lab):
    root, write = lab
    orch(root, "submit", "spec.yaml")
    before = {r[Tag.KEY] for r in seed_rows(root, "ident")}
    write(extra="    momentum: float = 0.0\n    warmup: int = 0\n")
    again = orch(root, "submit", "spec.yaml")
    assert "0 to run" in text(again) and "note:" not in text(again)
    assert {r[Tag.KEY] for r in seed_rows(root, "ident")} == before and len(before) == 4
    assert len(group_rows(root, "ident")) == 2
    status = json.loads(orch(root, "status", "ident", "--json").stdout)
    assert [(g["label"], g["finished"], g["drifted"]) for g in status["groups"]] == [("short", 2, 0), ("long", 2, 0)]
    # the new param set off its default is another experiment: it runs
    assert "4 to run" in text(orch(root, "submit", "spec.yaml", "--set", "momentum=0.9"))


def test_changing_a_default_keeps_the_runs_and_submit_status_and_compare_name_the_field(lab):
    root, write = lab
    orch(root, "submit", "spec.yaml")
    write(lr=0.2)
    dry = orch(root, "submit", "spec.yaml", "--dry-run")
    assert "done" in dry.stdout and "lr = 0.1 (default now 0.2)" in text(dry)
    again = orch(root, "submit", "spec.yaml")
    assert "0 to run" in text(again)
    assert "note: 2 finished runs of short ran with lr = 0.1 (default now 0.2)" in text(again)
    status = orch(root, "status", "ident")
    assert "2 finished runs of long ran with lr = 0.1 (default now 0.2)" in text(status)
    assert json.loads(orch(root, "status", "ident", "--json").stdout)["groups"][0]["drift"] == {"lr": [0.1, 0.2]}
    notes = json.loads(orch(root, "compare", "ident", "--json").stdout)["notes"]
    assert any("`short`: 2 finished run(s) ran with lr = 0.1 (default now 0.2)" in n for n in notes), notes
    # one more seed runs under the new default, in the same group: the group now mixes two defaults, said so
    more = orch(root, "submit", "spec.yaml", "--seeds", "3")
    assert "2 to run" in text(more)
    assert len(group_rows(root, "ident")) == 2
    status = json.loads(orch(root, "status", "ident", "--json").stdout)["groups"]
    assert [(g["finished"], g["drifted"]) for g in status] == [(3, 2), (3, 2)]


def test_a_non_identity_field_reruns_nothing(lab):
    root, _ = lab
    orch(root, "submit", "spec.yaml")
    assert "0 to run" in text(orch(root, "submit", "spec.yaml", "--set", "threads=8"))
    # a variant differing only in an execution setting is the same experiment under two names
    bad = orch(root, "submit", "spec.yaml", "--set", "variants.other={steps: 2, threads: 4}", check=False)
    assert bad.returncode == 2 and "resolves to the same params as variant 'short'" in text(bad)


def test_a_built_in_workloads_execution_settings_are_not_identity(store):
    spec = {"name": "smk", "workload": "smoke", "params": {"steps": 3}, "seeds": 2}
    store.orch("submit", str(store.spec(spec)), check=True)
    again = store.orch("submit", str(store.spec(spec)), "--set", "checkpoint_every=2", check=True)
    assert "0 to run" in " ".join(again.output.split())


def test_a_command_spec_names_its_execution_settings(store, monkeypatch):
    monkeypatch.chdir(store.root)
    shutil.copy(FIXTURE / "score.py", store.root / "score.py")
    spec = {
        "name": "cmd",
        "command": ["python", "score.py", "{lr}"],
        "metric": {"name": "score", "mode": "max"},
        "params": {"lr": 0.5, "workers": 2},
        "identity_exclude": ["workers"],
        "seeds": 2,
    }
    store.orch("submit", str(store.spec(spec)), check=True)
    again = store.orch("submit", str(store.spec(spec)), "--set", "params.workers=16", check=True)
    assert "0 to run" in " ".join(again.output.split())
    moved = store.orch("submit", str(store.spec(spec)), "--set", "params.lr=0.25", check=True)
    assert "2 to run" in " ".join(moved.output.split())


def test_identity_exclude_naming_no_param_is_refused(store):
    spec = {"name": "bad", "workload": "smoke", "identity_exclude": ["steps", "chekpoint_every"]}
    result = store.orch("submit", str(store.spec(spec)))
    assert result.exit_code == 2
    out = " ".join(result.output.split())
    assert "identity_exclude[1]" in out and "did you mean 'checkpoint_every'" in out
    assert not (store.root / "mlflow.db").exists()


# -- a store written by key scheme 1 --------------------------------------------------------------------
@pytest.fixture
def legacy_store(tmp_path):
    """A copy of a store made by orch's key scheme 1 (tests/fixtures/key_scheme_1), moved here."""
    with gzip.open(FIXTURE / "mlflow.db.gz") as src, open(tmp_path / "mlflow.db", "wb") as dst:
        shutil.copyfileobj(src, dst)
    with sqlite3.connect(tmp_path / "mlflow.db") as conn:  # its artifacts and run directories live here now
        conn.execute(
            "UPDATE experiments SET artifact_location = replace(artifact_location, '/tmp/v1store', ?)", (str(tmp_path),)
        )
        conn.execute("UPDATE runs SET artifact_uri = replace(artifact_uri, '/tmp/v1store', ?)", (str(tmp_path),))
    for name in ("legacy.yaml", "legacy_cmd.yaml", "score.py"):
        (tmp_path / name).write_text((FIXTURE / name).read_text().replace("/tmp/v1store", str(tmp_path)))
    return tmp_path


def test_a_key_scheme_1_store_is_reconciled_without_rerunning(legacy_store):
    root = legacy_store
    assert all(Tag.KEY_SCHEME not in r for r in seed_rows(root, "legacy"))
    dry = orch(root, "submit", "legacy.yaml", "--dry-run")
    assert dry.stdout.count("done") == 6
    assert all(Tag.KEY_SCHEME not in r for r in seed_rows(root, "legacy"))  # a dry run writes nothing
    assert "0 to run" in text(orch(root, "submit", "legacy.yaml"))
    rows = seed_rows(root, "legacy")
    assert len(rows) == 6 and {r[Tag.KEY_SCHEME] for r in rows} == {"2"}
    groups = group_rows(root, "legacy")
    assert len(groups) == 2 and {g[Tag.GROUP] for g in groups} == {r[Tag.GROUP] for r in rows}
    assert "0 to run" in text(orch(root, "submit", "legacy.yaml"))  # idempotent
    more = orch(root, "submit", "legacy.yaml", "--seeds", "4")  # the next seed joins the old groups
    assert "2 to run" in text(more)
    assert len(group_rows(root, "legacy")) == 2
    status = json.loads(orch(root, "status", "legacy", "--json").stdout)["groups"]
    assert [(g["label"], g["finished"]) for g in status] == [("quiet", 4), ("loud", 4)]
    assert "0 to run" in text(orch(root, "submit", "legacy_cmd.yaml"))  # a command's runs too


def test_a_key_scheme_1_run_is_found_by_its_params_when_a_param_was_added_since(legacy_store):
    """What a scheme-1 store looks like after a param was added to the workload: its runs never recorded
    that param, and their scheme-1 keys (every param hashed) no longer match any planned run."""
    root = legacy_store
    with sqlite3.connect(root / "mlflow.db") as conn:
        conn.execute("DELETE FROM params WHERE key = 'nan_at_step'")
        conn.execute("UPDATE tags SET value = 'x' || substr(value, 2) WHERE key = 'orch.key'")
    assert "0 to run" in text(orch(root, "submit", "legacy.yaml"))
    rows = seed_rows(root, "legacy")
    assert {r[Tag.KEY_SCHEME] for r in rows} == {"2"}
    assert all("nan_at_step" not in json.loads(r[Tag.DEFAULTS]) for r in rows)  # it never recorded one
    # a scheme-1 run no planned run matches is looked at once, then left alone under scheme 1
    other = orch(root, "submit", "legacy.yaml", "--set", "params.steps=5")
    assert "6 to run" in text(other)


def test_an_untagged_run_already_keyed_by_scheme_2_is_taken_as_it_is():
    """A store another tool filled with orch's keys but not its scheme tag: nothing is read or re-tagged."""
    from orchestrator import rekey
    from orchestrator.spec.plan import Run
    from orchestrator.tracking.records import RunRecord

    class NoStore:  # any read or write would be a bug here
        client = None

        def set_tags(self, *args):
            raise AssertionError("nothing to write")

    run = Run("smoke", {"steps": 3}, 0, "base", identity={"steps": 3})
    record = RunRecord("r1", "FINISHED", {Tag.KEY: run.key, Tag.GROUP: run.group}, {})
    assert rekey.adopt(NoStore(), "1", [run], [record]) == [record]  # type: ignore[arg-type]
