"""Bad input on the newer surfaces, as a user meets it through the CLI: exit 2, the file and field named,
what was expected, and nothing written. (Run ids in filters, a command that cannot start, a task layout
slipped in through a profile's sbatch escape hatch.)"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml


@pytest.mark.parametrize("command", ["logs", "reproduce"])
@pytest.mark.parametrize("run", ["a'b", 'x" or 1=1 --', "a b", "../etc"])
def test_a_run_argument_that_could_quote_a_filter_is_refused(store, command, run):
    store.orch("submit", str(store.spec({"name": "q", "workload": "smoke", "params": {"steps": 1}})), check=True)
    result = store.orch(command, run)
    assert result.exit_code == 2 and "is not a run id, key or job id" in result.output
    assert "Traceback" not in result.output and "MlflowException" not in result.output


def _command_spec(store, program: str) -> str:
    return str(store.spec({"name": "cmd", "command": [program, "--seed", "{seed}"], "metric": {"name": "loss"}}))


def test_a_command_that_cannot_start_is_refused_at_submit(store, monkeypatch):
    monkeypatch.chdir(store.root)
    (store.root / "dir.sh").mkdir()
    script = store.root / "train.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(stat.S_IRUSR | stat.S_IWUSR)
    cases = {
        "./missing.sh": "no such file: ./missing.sh",
        "./dir.sh": "is a directory",
        "./train.sh": "is not executable",
        "no-such-program-xyz": "not found on PATH",
    }
    for program, words in cases.items():
        result = store.orch("submit", _command_spec(store, program))
        assert result.exit_code == 2 and words in result.output and "command[0]" in result.output, result.output
        assert not store.workdir.exists()
    script.chmod(script.stat().st_mode | stat.S_IXUSR)  # the same script, executable: accepted
    assert store.orch("submit", _command_spec(store, "./train.sh"), "--dry-run").exit_code == 0


@pytest.mark.parametrize("key", ["ntasks_per_node", "ntasks-per-node", "nodes", "cpus_per_task"])
def test_a_task_layout_in_the_sbatch_escape_hatch_is_refused(store, monkeypatch, key):
    monkeypatch.chdir(store.root)
    profile = store.root / "mine.yaml"
    profile.write_text(yaml.safe_dump({"partition": "cpu", "sbatch": {key: 2, "exclusive": True}}))
    spec = store.spec({"name": "t", "workload": "smoke"})
    result = store.orch("submit", str(spec), "--backend", "slurm", "--cluster", str(profile), "--dry-run")
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())
    assert f"sbatch.{key}" in text and "sets the task layout itself" in text and "mine.yaml" in text
    assert sorted(os.listdir(store.root)) == ["mine.yaml", "spec.yaml"]  # nothing written


BOMB = (
    "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n"
    "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]"
)


@pytest.mark.parametrize(
    "value, words",
    [
        (BOMB, "expands to more than"),
        ("&x [*x]", "nested too deeply"),
        ("{a: 1, a: 2}", "duplicate key 'a'"),
        ("!!python/object/apply:os.system [echo]", "YAML tag not allowed"),
        ("[1, 2", "malformed YAML"),
        (".nan", "finite number"),
        ("x" * 70_000, "at most 65,536 characters"),
    ],
)
def test_set_values_go_through_the_spec_files_loader(store, value, words):
    spec = store.spec({"name": "s", "workload": "smoke"})
    result = store.orch("submit", str(spec), "--set", f"offset={value}", "--dry-run")
    assert result.exit_code == 2 and words in result.output and "--set" in result.output, result.output[:300]
    assert "Traceback" not in result.output and not store.workdir.exists()


def test_a_module_beside_the_spec_does_not_shadow_the_standard_library_in_the_runs(store, monkeypatch):
    """`colorsys.py` next to the spec (the standard library's name, imported by the runs' matplotlib)."""
    monkeypatch.chdir(store.root)
    marker = store.root / "SHADOWED"
    (store.root / "colorsys.py").write_text(f"open({str(marker)!r}, 'a').write('imported')\n")
    spec = store.spec({"name": "shadow", "workload": "smoke", "params": {"steps": 2}})
    for orch in ([str(Path(sys.executable).with_name("orch"))], [sys.executable, "-m", "orchestrator"]):
        result = subprocess.run(
            [*orch, "submit", str(spec), "--seeds", "2", "--tracking-uri", store.uri],
            cwd=store.root,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout + result.stderr
    assert {r.status for r in store.seed_runs("shadow")} == {"FINISHED"} and not marker.exists()


@pytest.mark.parametrize(
    "body, words",
    [
        ("import sys; sys.exit(3)", "called sys.exit(3)"),
        ("import os; os._exit(0)", "ended its process"),
        ("import time; time.sleep(600)", "did not return within 3 s"),
    ],
)
def test_a_lab_module_that_exits_or_hangs_at_import_is_reported(store, monkeypatch, body, words):
    monkeypatch.chdir(store.root)
    module = f"hostile_{abs(hash(body))}"
    (store.root / f"{module}.py").write_text(f"{body}\nMETRIC = 'x'\n")
    spec = store.spec({"name": "hostile", "workload": module})
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "submit", str(spec), "--tracking-uri", store.uri],
        cwd=store.root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ORCH_IMPORT_TIMEOUT_S": "3"},
    )
    assert result.returncode == 2 and words in result.stderr + result.stdout, result.stderr + result.stdout
    assert not store.workdir.exists() and not (store.root / "mlflow.db").exists()


def test_grid_labels_survive_every_table_and_verdict(store, monkeypatch):
    """`base[offset=0.05]` is rich markup to rich: every user string that reaches a terminal is escaped."""
    monkeypatch.chdir(store.root)
    spec = store.spec({"name": "g", "workload": "smoke", "params": {"steps": 3}, "grid": {"offset": [0.05, 0.2]}})
    cli = [sys.executable, "-m", "orchestrator"]
    outputs = []
    for args in (
        ["submit", str(spec), "--seeds", "2"],
        ["status", "g"],
        ["compare", "g"],
        ["submit", str(spec), "--dry-run"],
    ):
        uri = [] if "--dry-run" in args else ["--tracking-uri", store.uri]
        result = subprocess.run(
            [*cli, *args, *uri],
            cwd=store.root,
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    submit, status, compare, plan = outputs
    for text in (submit, status, compare):
        assert "base[offset=0.05]" in text and "base[offset=0.2]" in text, text
    assert "base[offset=0.05] is better than base[offset=0.2]" in " ".join(compare.split())
    assert "offset=0.05" in plan


@pytest.mark.parametrize("what", ["sparse 3 GB file", "20,001 files"])
def test_a_code_tree_too_large_to_snapshot_is_refused_before_anything_is_written(store, monkeypatch, what):
    monkeypatch.chdir(store.root)
    package = store.root / "bigcode"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "train.py").write_text(
        "from pydantic import BaseModel\nMETRIC = 'x'\nclass Params(BaseModel):\n"
        "    pass\ndef run(params, ctx):\n    return {'x': 1.0}\n"
    )
    if what.startswith("sparse"):
        with open(package / "data.bin", "wb") as f:
            f.truncate(3 * 2**30)  # no block written: reading it whole was a MemoryError
    else:
        for i in range(20_001):
            (package / f"f{i}.txt").touch()
    spec = store.spec({"name": "big", "workload": "bigcode.train"})
    result = store.orch("submit", str(spec))
    assert result.exit_code == 2 and "to snapshot" in result.output and "snapshot: false" in result.output
    assert not store.workdir.exists() and not (store.root / "mlflow.db").exists()


def test_status_runs_lists_every_seed_run_and_logs_of_a_group_names_its_seeds(store, monkeypatch):
    monkeypatch.chdir(store.root)
    spec = store.spec({"name": "r", "workload": "smoke", "params": {"steps": 2}, "grid": {"offset": [0.0, 0.5]}})
    store.orch("submit", str(spec), "--seeds", "2", check=True)
    seeds = store.seed_runs("r")
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "status", "r", "--runs", "--tracking-uri", store.uri],
        cwd=store.root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "150"},
    )
    assert (
        result.returncode == 0 and all(r.run_id in result.stdout for r in seeds) and "base[offset=0.5]" in result.stdout
    )
    ledger = store.ledger()
    group = ledger.runs(ledger.experiment_id("r"), role="group")[0]
    logs = store.orch("logs", group.run_id)
    text = " ".join(logs.output.split())
    assert logs.exit_code == 2 and "is a group run, with no logs of its own" in text
    mine = [r.run_id for r in seeds if r.tags["orch.group"] == group.tags["orch.group"]]
    assert len(mine) == 2 and all(run_id in text for run_id in mine)


def test_piped_output_puts_the_final_table_on_its_own_line(store, monkeypatch):
    """Without a terminal (a pipe, a cron job's log) the progress bar's last picture ended without a newline:
    the status table's title was glued onto it."""
    monkeypatch.chdir(store.root)
    spec = store.spec({"name": "piped", "workload": "smoke", "params": {"steps": 2}})
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "submit", str(spec), "--seeds", "2", "--tracking-uri", store.uri],
        cwd=store.root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    bar = next(line for line in result.stdout.splitlines() if line.startswith("runs "))
    assert "piped" not in bar and bar.rstrip().endswith("eta -"), bar  # all done: no time left to estimate


def test_workloads_shows_one_when_named_and_submit_says_what_to_run_next(store, monkeypatch):
    one = store.orch("workloads", "smoke")
    assert one.exit_code == 0 and "smoke" in one.output and "evo_topo" not in one.output
    wrong = store.orch("workloads", "evo_topoo")
    assert wrong.exit_code == 2 and "did you mean 'evo_topo'" in wrong.output
    monkeypatch.chdir(store.root)
    spec = store.spec(
        {"name": "nxt", "workload": "smoke", "params": {"steps": 2}, "variants": {"a": {}, "b": {"offset": 0.5}}}
    )
    submitted = store.orch("submit", str(spec), "--seeds", "2", check=True)
    assert "next: orch compare nxt" in submitted.output


@pytest.mark.parametrize("value", ["soon", "-1", "nan", "1e999"])
def test_a_bad_import_timeout_is_refused(store, monkeypatch, value):
    monkeypatch.chdir(store.root)
    (store.root / "labmod_timeout.py").write_text("METRIC = 'x'\n")
    monkeypatch.setenv("ORCH_IMPORT_TIMEOUT_S", value)
    result = store.orch("submit", str(store.spec({"name": "t", "workload": "labmod_timeout"})))
    assert result.exit_code == 2 and "ORCH_IMPORT_TIMEOUT_S" in result.output and "seconds above 0" in result.output
    assert not store.workdir.exists()
