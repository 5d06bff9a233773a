"""A run's bad output fails that run alone: metric names and steps MLflow refuses, non-finite or non-numeric
finals. Every other run and every later command goes on; ingestion survives a journal that holds them."""

from __future__ import annotations

import json

import pytest

from orchestrator.job import metric_rules

# one command, whose output is chosen by the `case` param: each case is a variant of one experiment
SCRIPT = """
import json, os, sys
case = sys.argv[1]
lines = {
    "good": [{"step": 0, "acc": 0.5}, {"final": {"acc": 0.75}}],
    "dotdot": [{"step": 0, "a/../b": 1}],
    "long": [{"step": 0, "x" * 600: 1}],
    "dollar": [{"step": 0, "bad$name": 1}],
    "empty": [{"step": 0, "": 1}],
    "huge_step": [{"step": 2 ** 70, "acc": 1}],
    "inf_final": [{"step": 0, "acc": 0.5}, {"final": {"acc": float("-inf")}}],
    "bad_final_name": [{"step": 0, "acc": 0.5}, {"final": {"acc": 0.5, "/abs": 1.0}}],
}[case]
with open(os.environ["ORCH_METRICS"], "a") as f:
    for line in lines:
        f.write(json.dumps(line) + "\\n")
"""
CASES = {
    "dotdot": "resolves to",
    "long": "600 characters",
    "dollar": "only letters",
    "empty": "non-empty",
    "huge_step": "64-bit",
    "inf_final": "infinite",
    "bad_final_name": "'/abs'",
}


def test_each_bad_output_fails_its_own_run_and_nothing_else(store, monkeypatch):
    monkeypatch.chdir(store.root)
    (store.root / "emit.py").write_text(SCRIPT)
    spec = store.spec(
        {
            "name": "bad",
            "command": ["python", "emit.py", "{case}"],
            "params": {"case": "good"},
            "metric": {"name": "acc", "mode": "max"},
            "variants": {"good": {}, **{c: {"case": c} for c in CASES}},
        }
    )
    result = store.orch("submit", str(spec), "--seeds", "1")
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    runs = {r.tags["orch.variant"]: r for r in store.seed_runs("bad")}
    assert runs["good"].status == "FINISHED" and runs["good"].metrics["acc"] == 0.75
    for case, words in CASES.items():
        assert runs[case].status == "FAILED", case
        assert words in runs[case].tags["orch.error"], (case, runs[case].tags["orch.error"])
    status = store.orch("status", "bad")
    assert status.exit_code == 0 and "Traceback" not in status.output
    assert store.orch("compare", "bad").exit_code == 0  # one good run: a report, no crash


def test_ingestion_drops_what_mlflow_refuses_and_records_the_rest(store, monkeypatch):
    """A journal written without these checks (an older orch, a hand edit) is ingested without them."""
    from orchestrator.job.journal import JournalWriter
    from orchestrator.job.rundir import RunDir
    from orchestrator.spec.plan import Run

    store.orch("submit", str(store.spec({"name": "old", "workload": "smoke", "params": {"steps": 2}})), check=True)
    (record,) = store.seed_runs("old")
    run_dir = RunDir(store.root / "handmade")
    run_dir.create({"run": Run("smoke", {}, 9, "v").to_dict(), "run_id": record.run_id, "experiment_id": "0"})
    journal = JournalWriter(run_dir.journal)
    journal.write("metrics", step=0, metrics={"a/../b": 1.0, "fine": 2.0})
    journal.write("metrics", step=2**70, metrics={"fine": 3.0})
    journal.write("end", status="FINISHED", final={"fine": 2.0, "bad$": 1.0}, error=None)
    journal.close()
    ledger = store.ledger()
    assert ledger.ingest(run_dir) == "FINISHED"
    run = ledger.get(record.run_id)
    assert run.metrics["fine"] == 2.0 and "bad$" not in run.metrics
    assert "a/../b" in run.tags["orch.warning"] and "64-bit" in run.tags["orch.warning"]


NAMES = [
    "loss",
    "val/acc",
    "a b:c-d.e_f",
    "é",
    "a/../b",
    "../a",
    "/a",
    "a/",
    "a//b",
    ".",
    "",
    "bad$",
    "x" * 250,
    "x" * 251,
    "a\nb",
    "tab\t",
    "ok:1",
]


@pytest.mark.parametrize("name", NAMES)
def test_the_rules_are_mlflows_own(name):
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH, _validate_length_limit, _validate_metric_name

    try:
        _validate_metric_name(name)
        _validate_length_limit("Metric name", MAX_ENTITY_KEY_LENGTH, name)
        mlflow_ok = bool(name)  # MLflow's regex takes "" but no store keeps an empty key
    except MlflowException:
        mlflow_ok = False
    assert (metric_rules.name_problem(name) is None) == mlflow_ok, json.dumps(name)
