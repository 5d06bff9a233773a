"""Bad input around a store that exists: an unreadable file, and --dry-run (which writes nothing). The table of
every bad spec, flag and environment value is tests/test_bad_inputs.py."""

from __future__ import annotations

import re

GOOD = {"name": "bad", "workload": "smoke", "params": {"steps": 2}, "seeds": 2}


def test_unreadable_file(store):
    missing = store.root / "nowhere.yaml"
    result = store.orch("submit", str(missing))
    assert result.exit_code == 2
    assert "nowhere.yaml" in result.output and "cannot read" in result.output
    assert not (store.root / "mlflow.db").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(store):
    path = store.spec({**GOOD, "variants": {"a": {"offset": 0}, "b": {"offset": 1}}, "grid": {"noise": [0.1, 0.2]}})
    result = store.orch("submit", str(path), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "plan: 8 runs" in result.output
    assert not (store.root / "mlflow.db").exists() and not store.workdir.exists()


def test_dry_run_says_what_is_new_and_what_already_finished(store):
    path = store.spec({**GOOD, "seeds": 2})
    store.orch("submit", str(path), check=True)
    before = store.ledger().client.search_runs([store.ledger().experiment_id(GOOD["name"])])
    result = store.orch("submit", str(path), "--seeds", "3", "--dry-run", check=True)
    states = re.findall(r"│\s*(done|new|retry|active)\s*│", result.output)
    assert sorted(states) == ["done", "done", "new"], result.output
    after = store.ledger().client.search_runs([store.ledger().experiment_id(GOOD["name"])])
    assert len(after) == len(before)  # nothing written
