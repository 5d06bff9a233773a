"""Bad input: each case exits 2 with a message naming the file, the field path and what was expected,
and creates no MLflow store, experiment, run or run directory."""

from __future__ import annotations

import re

import pytest
import yaml

GOOD = {"name": "bad", "workload": "smoke", "params": {"steps": 2}, "seeds": 2}


def spec(**changes):
    doc = dict(GOOD)
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


# (id, spec document or raw YAML text, extra CLI args, substrings the message must contain)
CASES = [
    ("malformed-yaml", "name: x\nworkload: [smoke\n", [], ["malformed YAML", "line 3"]),
    ("not-a-mapping", "- a\n- b\n", [], ["expected a mapping", "list"]),
    ("scalar-document", "42\n", [], ["expected a mapping", "int"]),
    ("empty-document", "", [], ["expected a mapping", "NoneType"]),
    ("python-object-tag", "name: x\nworkload: !!python/object/apply:os.system ['true']\n", [], ["YAML tag not allowed"]),
    ("unknown-top-level", spec(paramz={"steps": 2}), [], ["paramz", "unknown field", "did you mean 'params'"]),
    ("missing-name", spec(name=None), [], ["name", "Field required"]),
    ("bad-name-chars", spec(name="a b/c"), [], ["name", "pattern"]),
    ("missing-workload", spec(workload=None), [], ["workload", "Field required"]),
    ("unknown-workload", spec(workload="smok"), [], ["workload", "unknown workload 'smok'", "did you mean 'smoke'", "known:"]),
    ("unknown-param", spec(params={"stepz": 3}), [], ["params.stepz", "did you mean 'steps'"]),
    ("wrong-param-type", spec(params={"steps": "many"}), [], ["params.steps", "integer"]),
    ("param-out-of-range", spec(params={"steps": 0}), [], ["params.steps", "greater than or equal to 1"]),
    ("params-not-mapping", spec(params=[1, 2]), [], ["params", "dictionary"]),
    ("zero-seeds", spec(seeds=0), [], ["seeds.count", "greater than 0"]),
    ("negative-seeds", spec(seeds=-3), [], ["seeds.count", "greater than 0"]),
    ("negative-seed-base", spec(seeds={"count": 2, "base": -1}), [], ["seeds.base", "greater than or equal to 0"]),
    ("seeds-cli-zero", spec(), ["--seeds", "0"], ["--seeds", "positive"]),
    ("unknown-variant-field", spec(variants={"a": {"offset": 1}, "b": {"ofset": 2}}), [], ["variants.b.ofset", "did you mean 'offset'"]),
    ("variant-wrong-type", spec(variants={"a": {"noise": "loud"}}), [], ["variants.a.noise", "number"]),
    ("duplicate-variants", spec(variants={"a": {"offset": 1}, "b": {"offset": 1.0}}), [], ["variants.b", "same params as variant 'a'"]),
    ("variant-equals-base", spec(variants={"a": {}, "b": {"steps": 2}}), [], ["variants.b", "same params"]),
    ("grid-key-not-param", spec(grid={"lr": [1, 2]}), [], ["grid.lr", "not a param"]),
    ("empty-grid-list", spec(grid={"offset": []}), [], ["grid.offset", "empty list"]),
    ("grid-not-list", spec(grid={"offset": 3}), [], ["grid.offset", "list"]),
    ("grid-bad-value", spec(grid={"steps": [1, "x"]}), [], ["grid.steps", "integer"]),
    ("unknown-backend", spec(backend="kubernetes"), [], ["backend", "local"]),
    ("unknown-backend-cli", spec(), ["--backend", "pbs"], ["--backend", "unknown backend 'pbs'"]),
    ("negative-resources", spec(resources={"cpus": -1}), [], ["resources.cpus", "greater than 0"]),
    ("unknown-resource", spec(resources={"gpu": 1}), [], ["resources.gpu", "unknown field", "did you mean 'gpus'"]),
    ("set-missing-key", spec(), ["--set", "params.nope=1"], ["--set", "params.nope", "no such param"]),
    ("set-bad-syntax", spec(), ["--set", "steps"], ["--set", "KEY=VALUE"]),
    ("set-bad-yaml", spec(), ["--set", "steps=[1"], ["--set", "not valid YAML"]),
    ("set-wrong-type", spec(), ["--set", "steps=abc"], ["params.steps", "integer"]),
    ("tracking-not-mapping", spec(tracking="sqlite:///x.db"), [], ["tracking", "Input should be"]),
    ("max-parallel-zero", spec(), ["--max-parallel", "0"], ["--max-parallel", "at least 1"]),
]


@pytest.mark.parametrize("case_id,doc,args,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_spec_is_rejected_with_a_clear_message_and_nothing_written(store, case_id, doc, args, expected):
    path = store.root / "bad.yaml"
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump({"workdir": str(store.workdir), **doc}))
    before = sorted(p.name for p in store.root.iterdir())
    result = store.orch("submit", str(path), *args)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    source = "--" if any(e.startswith("--") for e in expected[:1]) else str(path)
    assert source in message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert sorted(p.name for p in store.root.iterdir()) == before, "bad input must create nothing"


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
