"""`orch compare` over real smoke runs in a real MLflow store: a real difference is detected, identical
variants are not called significant, the report reaches MLflow, and bad input gets a clear message."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts" / "compare"

# offset moves the loss; a different noise scale makes the paired differences vary (a real paired test);
# sleep_s changes nothing in the values (checkpoint_every, an execution setting, would be the same run): `low_copy`
# is `low` under another name
SPEC = {
    "name": "cmp",
    "workload": "smoke",
    "params": {"steps": 6, "noise": 0.05},
    "seeds": 4,
    "variants": {
        "low": {"offset": 0.0},
        "high": {"offset": 0.3, "noise": 0.08},
        "low_copy": {"offset": 0.0, "sleep_s": 0.001},
    },
}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from conftest import Store

    store = Store(tmp_path_factory.mktemp("compare"))
    store.orch("submit", str(store.spec(SPEC)), check=True)
    return store


def compare_json(store, *args):
    result = store.orch("compare", "cmp", "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{") :])


def test_detects_a_real_difference_and_not_an_identical_copy(smoke):
    out = compare_json(smoke, "--baseline", "low")
    groups = {g["name"]: g for g in out["groups"]}
    assert list(groups) == ["low", "high", "low_copy"]
    for g in groups.values():
        assert g["n"] == 4 and g["runs"]["finished"] == 4 and g["runs"]["failed"] == g["runs"]["missing"] == 0
        assert sorted(g["seeds"]) == ["0", "1", "2", "3"]
        assert g["ci_low"] < g["mean"] < g["ci_high"] and g["boot_low"] < g["mean"] < g["boot_high"]
    cmp = {c["a"]: c for c in out["comparisons"]}
    assert set(cmp) == {"high", "low_copy"} and all(c["b"] == "low" for c in cmp.values())
    high = cmp["high"]
    assert high["significant"] is True and high["outcome"] == "worse"
    assert high["primary"] == "paired_t" and high["n_pairs"] == 4
    assert high["diff_low"] < 0.3 < high["diff_high"] and high["diff"] == pytest.approx(0.3, abs=0.1)
    assert set(high["p_values"]) == {
        "welch_t",
        "mann_whitney_u",
        "paired_t",
        "wilcoxon",
        "permutation",
        "permutation_paired",
    }
    assert high["p_holm"] < 0.05 and high["p_holm"] >= high["p_value"]
    assert high["verdict"].startswith("`low` is better than `high`")
    copy = cmp["low_copy"]
    assert copy["significant"] is False and copy["outcome"] == "identical" and copy["diff"] == 0
    assert groups["low_copy"]["values"] == groups["low"]["values"] or sorted(groups["low_copy"]["values"]) == sorted(
        groups["low"]["values"]
    )
    # learning curves: the per-step loss aggregated over the 4 seeds
    curve = groups["high"]["curve"]
    assert out["curve_metric"] == "loss" and curve["steps"] == list(range(6)) and set(curve["n"]) == {4}
    assert curve["mean"][0] > curve["mean"][-1]


def test_report_reaches_mlflow(smoke):
    ledger = smoke.ledger()
    out = compare_json(smoke, "--baseline", "low")
    experiment_id = ledger.experiment_id("cmp")
    run = ledger.client.get_run(out["compare_run_id"])
    assert run.data.tags["orch.role"] == "compare" and run.info.status == "FINISHED"
    assert "`low` is better than `high`" in run.data.tags["mlflow.note.content"]
    names = {a.path for a in ledger.client.list_artifacts(run.info.run_id)}
    assert {"report.md", "report.html", "compare.json", "final_metric.png", "curves.png"} <= names
    local = Path(ledger.client.download_artifacts(run.info.run_id, "", str(smoke.root / "dl")))
    markdown = (local / "report.md").read_text()
    assert "## Verdicts" in markdown and "| high |" in markdown and "![" in markdown
    assert "data:image/png;base64," in (local / "report.html").read_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # kept for a look (git-ignored)
    for name in ("final_metric.png", "curves.png", "report.md", "report.html"):
        shutil.copy(local / name, ARTIFACTS / name)
    # the group aggregates on each parent run, sortable in the UI
    groups = {g["name"]: g for g in out["groups"]}
    for parent in ledger.runs(experiment_id, role="group"):
        g = groups[parent.tags["mlflow.runName"]]
        for key in ("mean", "std", "ci_low", "ci_high", "n"):
            assert parent.metrics[f"final_loss_{key}"] == pytest.approx(g[key])
    # the seed runs are untouched: the comparison run is not a seed
    assert len(ledger.runs(experiment_id)) == 12


def test_grouping_by_params_pools_groups(smoke):
    out = compare_json(smoke, "--by", "params.offset", "--no-log")
    groups = {g["name"]: g for g in out["groups"]}
    assert set(groups) == {"offset=0.0", "offset=0.3"} and groups["offset=0.0"]["n"] == 8
    (c,) = out["comparisons"]
    assert c["significant"] is True and c["primary"] == "welch_t" and not c["paired"]  # seeds repeat: no pairing
    by_variant = compare_json(smoke, "--by", "variant", "--no-log", "--metric", "final_loss", "--mode", "min")
    assert [g["name"] for g in by_variant["groups"]] == ["low", "high", "low_copy"]
    assert len(by_variant["comparisons"]) == 3  # all pairs without a baseline
    both = compare_json(smoke, "--by", "variant,params.offset", "--no-log", "--baseline", "low, offset=0.0")
    assert [g["name"] for g in both["groups"]] == ["low, offset=0.0", "high, offset=0.3", "low_copy, offset=0.0"]
    assert [c["primary"] for c in both["comparisons"]] == ["paired_t", "welch_t"]  # low_copy: identical, no paired t


def test_terminal_table_and_bad_input(smoke):
    result = smoke.orch("compare", "cmp", "--baseline", "low", "--no-log")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "(baseline)" in text and "low is better than high" in text and "no difference: low_copy and low" in text
    for args, message in (
        (["--metric", "final_los"], "unknown metric 'final_los' (did you mean 'final_loss'?)"),
        (["--baseline", "lo"], "no group named 'lo'"),
        (["--by", "params.nope"], "unknown grouping field 'params.nope'"),
        (["--alpha", "2"], "--alpha"),
        (["--curve", "nope"], "no history of metric 'nope'"),
    ):
        result = smoke.orch("compare", "cmp", "--no-log", *args)
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    result = smoke.orch("compare", "nothere")
    assert result.exit_code == 2 and "no experiment named 'nothere'" in result.output


def test_nan_failed_single_and_empty_groups(store):
    """Diverged (NaN) and failed runs, a group with one run, an experiment with nothing finished: no crash,
    no p-value. (NaN values of FINISHED runs are left out with a note: see test_stats.)"""
    spec = {
        "name": "edge",
        "workload": "smoke",
        "params": {"steps": 3, "noise": 0.05},
        "seeds": 2,
        "variants": {"fine": {}, "nan": {"nan_at_step": 0}, "broken": {"fail_at_step": 1}},
    }
    result = store.orch("submit", str(store.spec(spec)))
    assert result.exit_code == 1  # the broken runs failed, as asked
    out = json.loads(store.orch("compare", "edge", "--json", "--no-log").output)
    groups = {g["name"]: g for g in out["groups"]}
    # the core records a run whose loss became NaN as FAILED (diverged): it counts as failed, not as a value
    assert groups["nan"]["n"] == 0 and groups["nan"]["runs"]["failed"] == 2 and groups["nan"]["mean"] is None
    assert groups["broken"]["runs"]["failed"] == 2 and groups["broken"]["n"] == 0
    assert groups["fine"]["n"] == 2 and groups["fine"]["runs"]["failed"] == 0
    assert all(
        c["p_value"] is None and c["significant"] is False and c["outcome"] == "too_few_runs"
        for c in out["comparisons"]
    )
    text = " ".join(store.orch("compare", "edge", "--no-log").output.split())
    assert "cannot tell: fine has 2 and nan has 0 finished run(s)" in text and "(2 failed)" in text
    # one seed per group
    store.orch(
        "submit",
        str(store.spec({**spec, "name": "single", "seeds": 1, "variants": {"a": {}, "b": {"offset": 1.0}}})),
        check=True,
    )
    out = json.loads(store.orch("compare", "single", "--json", "--no-log").output)
    assert [g["std"] for g in out["groups"]] == [None, None]
    (c,) = out["comparisons"]
    assert c["p_value"] is None and not c["significant"] and "cannot tell" in c["verdict"]
    # an experiment whose runs all failed
    store.orch(
        "submit", str(store.spec({**spec, "name": "dead", "seeds": 1, "variants": {"broken": {"fail_at_step": 0}}}))
    )
    result = store.orch("compare", "dead")
    assert result.exit_code == 2 and "no FINISHED runs yet" in result.output and "1 failed" in result.output


def test_configurations_sharing_a_variant_name_are_not_pooled_unless_asked(store):
    """The same spec submitted again with other --set values, under the same experiment: `low` of the first
    config and `low` of the second are different groups; `--by variant` pools them and says so."""
    spec = {
        "name": "two",
        "workload": "smoke",
        "params": {"steps": 4, "noise": 0.0},
        "seeds": 3,
        "variants": {"low": {"offset": 0.0}, "high": {"offset": 0.2}},
    }
    path = store.spec(spec)
    store.orch("submit", str(path), check=True)
    store.orch("submit", str(path), "--set", "params.steps=5", "--set", "params.noise=0.5", check=True)
    out = json.loads(store.orch("compare", "two", "--json", "--no-log").output)
    names = [g["name"] for g in out["groups"]]
    assert len(names) == 4 and all(g["n"] == 3 for g in out["groups"])
    assert "low (noise=0.0, steps=4)" in names and "low (noise=0.5, steps=5)" in names
    first = {g["name"]: g["mean"] for g in out["groups"]}
    assert first["high (noise=0.0, steps=4)"] - first["low (noise=0.0, steps=4)"] > 0.19  # no noise: exactly 0.2
    ambiguous = store.orch("compare", "two", "--no-log", "--baseline", "low")
    assert ambiguous.exit_code == 2 and "names 2 groups" in ambiguous.output
    chosen = json.loads(
        store.orch("compare", "two", "--json", "--no-log", "--baseline", "low (noise=0.0, steps=4)").output
    )
    verdicts = {(c["a"], c["b"]): c["outcome"] for c in chosen["comparisons"]}
    assert verdicts[("high (noise=0.0, steps=4)", "low (noise=0.0, steps=4)")] != "no_difference"
    pooled = json.loads(store.orch("compare", "two", "--json", "--no-log", "--by", "variant").output)
    assert [g["n"] for g in pooled["groups"]] == [6, 6]
    assert any("pools 2 configurations that differ in noise, steps" in n for n in pooled["notes"])


def test_parents_carry_their_aggregates_when_their_seeds_finish_and_reports_update_one_run(store):
    spec = {"name": "agg", "workload": "smoke", "params": {"steps": 3, "noise": 0.1}, "seeds": 3}
    store.orch("submit", str(store.spec(spec)), check=True)
    ledger = store.ledger()
    experiment_id = ledger.experiment_id("agg")
    assert ledger.client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    (parent,) = ledger.runs(experiment_id, role="group")
    finals = [r.metrics["final_loss"] for r in ledger.runs(experiment_id)]
    assert parent.metrics["final_loss_n"] == 3  # no `orch compare` was run
    assert parent.metrics["final_loss_mean"] == pytest.approx(sum(finals) / 3)
    for _ in range(2):
        store.orch("compare", "agg", check=True)
    store.orch("compare", "agg", "--alpha", "0.01", check=True)
    reports = ledger.client.search_runs([experiment_id], "tags.`orch.role` = 'compare'")
    assert len(reports) == 1 and reports[0].data.tags["orch.compare.alpha"] == "0.01"


def test_where_keeps_the_matching_groups_in_compare_and_status(smoke):
    out = compare_json(smoke, "--no-log", "--where", "params.offset > 0.1")
    assert [g["name"] for g in out["groups"]] == ["high"]
    out = compare_json(smoke, "--no-log", "--where", "params.offset < 0.1 and variant != low_copy")
    assert [g["name"] for g in out["groups"]] == ["low"]
    status = json.loads(smoke.orch("status", "cmp", "--json", "--where", "variant = high", check=True).output)
    assert [g["variant"] for g in status["groups"]] == ["high"]
    for where, message in (("offset > 1", "cannot read 'offset > 1'"), ("params.offset > 5", "no group matches")):
        result = smoke.orch("compare", "cmp", "--no-log", "--where", where)
        assert result.exit_code == 2 and message in result.output, result.output


def test_fisher_randomization_as_the_primary_test(smoke):
    out = compare_json(smoke, "--baseline", "low", "--test", "permutation", "--no-log")
    high = next(c for c in out["comparisons"] if c["a"] == "high")
    assert out["test"] == "permutation" and high["primary"] == "permutation_paired"
    assert high["p_value"] == high["p_values"]["permutation_paired"] == pytest.approx(2 / 16)  # 4 pairs: exact
    assert "Fisher's randomization test p = 0.125" in high["verdict"]
    bad = smoke.orch("compare", "cmp", "--test", "bootstrap")
    assert bad.exit_code == 2 and "--test" in bad.output and "permutation" in bad.output
