"""A comparison whose sides were searched for unequally (the spec's `tuning:`, recorded on each group): `orch
compare` says so when the baseline got less tuning than the candidate, and bad budgets are refused."""

from __future__ import annotations

import json

SPEC = {
    "name": "budget",
    "workload": "smoke",
    "params": {"steps": 3, "noise": 0.01},
    "variants": {"tuned": {"offset": 0.0}, "hand": {"offset": 0.5}},
    "tuning": {"trials": 64, "sweep": "budget_tune-1", "variants": {"hand": {"trials": 0}}},
}


def test_a_baseline_tuned_less_than_its_candidate_is_named_in_the_report_and_json(store):
    path = store.spec(SPEC)
    store.orch("submit", str(path), "--seeds", "3", check=True)
    parents = {r.tags["orch.variant"]: r for r in store.ledger().runs(store.ledger().experiment_id("budget"), "group")}
    assert parents["tuned"].tags["orch.tuning.trials"] == "64"
    assert parents["tuned"].tags["orch.tuning.sweep"] == "budget_tune-1"
    assert parents["hand"].tags["orch.tuning.trials"] == "0" and "orch.tuning.sweep" not in parents["hand"].tags

    out = store.orch("compare", "budget", "--baseline", "hand", "--json", "--no-log", check=True).output
    notes = " ".join(json.loads(out[out.index("{") :])["notes"])
    assert "`hand` was chosen among 0 configuration(s), `tuned` among 64" in notes
    shown = " ".join(store.orch("compare", "budget", "--baseline", "hand", "--no-log", check=True).output.split())
    assert "tuning effort" in shown
    # the other way round the comparison is conservative: the baseline had the larger search
    out = store.orch("compare", "budget", "--baseline", "tuned", "--json", "--no-log", check=True).output
    assert "tuning effort" not in out


def test_the_same_budget_everywhere_says_nothing_and_a_later_spec_updates_the_groups(store):
    equal = {**SPEC, "tuning": {"trials": 10}}
    store.orch("submit", str(store.spec(equal)), "--seeds", "2", check=True)
    out = store.orch("compare", "budget", "--json", "--no-log", check=True).output
    assert "tuning effort" not in out
    store.orch("submit", str(store.spec(SPEC)), "--seeds", "2", check=True)  # nothing to run: the tags follow
    ledger = store.ledger()
    parents = {r.tags["orch.variant"]: r for r in ledger.runs(ledger.experiment_id("budget"), "group")}
    assert parents["hand"].tags["orch.tuning.trials"] == "0" and parents["tuned"].tags["orch.tuning.trials"] == "64"


def test_bad_budgets_are_refused_before_anything_is_written(store):
    for tuning, expected in (
        ({"trials": -1}, "tuning.trials"),
        ({"trials": "many"}, "tuning.trials"),
        ({"trials": 3, "variants": {"nosuch": {"trials": 1}}}, "nosuch"),
        ({"trials": 3, "budget": 9}, "tuning.budget"),
    ):
        path = store.spec({**SPEC, "name": "budget_bad", "tuning": tuning})
        result = store.orch("submit", str(path), "--seeds", "1")
        assert result.exit_code == 2 and expected in result.output, (tuning, result.output)
    assert store.ledger().experiment_id("budget_bad") is None
