"""`orch compare` as a user runs it (a subprocess) over a command workload reporting several final metrics and
a per-step loss: several metrics at once under one Holm family, P(better) and the IQM with their intervals
(checked against scipy on the same values), the aggregate over the metrics, the paper table, the curves on
the group parents, and bad input refused with exit code 2 before anything is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from orchestrator.analysis import robust, stats

REPO = Path(__file__).resolve().parent.parent

# three variants, five seeds; `acc` (higher is better), `err_k2` (lower), `weird` (no word says which way);
# a per-step `loss`, logged at 4 steps by every seed
EMIT = """
import json, os, random, sys
seed, shift = int(sys.argv[1]), float(sys.argv[2])
r = random.Random(seed)
with open(os.environ["ORCH_METRICS"], "a") as out:
    for step in range(4):
        out.write(json.dumps({"step": step, "loss": 1 / (step + 1) + shift + r.gauss(0, 0.05)}) + "\\n")
    final = {"acc": 0.7 - shift + r.gauss(0, 0.02), "err_k2": 0.3 + shift + r.gauss(0, 0.03), "weird": r.random()}
    out.write(json.dumps({"final": final}) + "\\n")
"""
SPEC = {
    "name": "multi",
    "command": ["python", "emit.py", "{seed}", "{shift}"],
    "metric": {"name": "acc", "mode": "max"},
    "params": {"shift": 0.0},
    "seeds": 5,
    "variants": {"base": {}, "good": {"shift": -0.1}, "bad": {"shift": 0.2}},
}


@pytest.fixture(scope="module")
def multi(tmp_path_factory):
    from conftest import Store

    store = Store(tmp_path_factory.mktemp("multi"))
    (store.root / "emit.py").write_text(EMIT)
    spec = store.spec({**SPEC, "workdir": str(store.workdir)})
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "submit", str(spec), "--tracking-uri", store.uri],
        cwd=store.root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return store


def orch(store, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args, "--tracking-uri", store.uri],
        cwd=cwd or store.root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "160"},
    )


def as_json(store, *args: str) -> dict:
    result = orch(store, "compare", "multi", "--json", *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_several_metrics_one_holm_family_and_the_robust_figures(multi):
    metrics = ("--metric", "acc", "--metric", "err_k2", "--metric", "weird:max")
    out = as_json(multi, *metrics, "--baseline", "base", "--no-log")
    assert out["metrics"] == ["acc", "err_k2", "weird"] and out["modes"] == ["max", "min", "max"]
    reports = {r["metric"]: r for r in out["reports"]}
    # acc: the workload's main metric and mode; err_k2: from its name (said in a note); weird: as given
    assert reports["acc"]["notes"] == [] or all("assumed" not in n for n in reports["acc"]["notes"])
    assert any("assumed lower err_k2 is better (from its name)" in n for n in reports["err_k2"]["notes"])
    comparisons = [c for r in out["reports"] for c in r["comparisons"]]
    assert out["family"] == len(comparisons) == 6
    # one Holm family over every comparison of every metric, not one per metric
    expected = stats.holm([c["p_value"] for c in comparisons])
    assert [c["p_holm"] for c in comparisons] == expected
    per_metric = stats.holm([c["p_value"] for c in reports["acc"]["comparisons"]])
    assert [c["p_holm"] for c in reports["acc"]["comparisons"]] != per_metric  # corrected for 6, not 2
    good_acc = next(c for c in reports["acc"]["comparisons"] if c["a"] == "good")
    assert good_acc["outcome"] == "better" and good_acc["p_holm"] < 0.05

    for r in out["reports"]:
        sign = 1 if r["mode"] == "max" else -1
        groups = {g["name"]: g for g in r["groups"]}
        for g in r["groups"]:
            x = np.asarray(g["values"])
            assert g["iqm"] == sps.trim_mean(x, 0.25)  # to the last digit
            boot = sps.bootstrap(
                (x,),
                lambda v, axis: sps.trim_mean(v, 0.25, axis=axis),
                n_resamples=9999,
                method="percentile",
                rng=np.random.default_rng(0),
            )
            assert (g["iqm_low"], g["iqm_high"]) == tuple(boot.confidence_interval)
        for c in r["comparisons"]:
            a, b = sign * np.asarray(groups[c["a"]]["values"]), sign * np.asarray(groups[c["b"]]["values"])
            u = sps.mannwhitneyu(a, b, alternative="greater").statistic
            assert c["p_better"] == u / (len(a) * len(b))
            assert c["p_better_low"] <= c["p_better"] <= c["p_better_high"]
    # `good` beats `base` on acc in every pair of runs: P(better) = 1 (shift 0.1 against noise 0.02)
    assert good_acc["p_better"] == 1.0
    # the aggregate: IQM over the three metrics scaled to [0, 1], and P(better) averaged over them
    agg = out["aggregate"]
    assert agg["metrics"] == ["acc", "err_k2", "weird"]
    iqm = {g["name"]: g for g in agg["groups"]}
    assert iqm["good"]["iqm"] > iqm["base"]["iqm"] > iqm["bad"]["iqm"]
    assert all(g["iqm_low"] <= g["iqm"] <= g["iqm_high"] for g in agg["groups"])
    pairs = {p["a"]: p for p in agg["pairs"]}
    expected_good = np.mean([c["p_better"] for r in out["reports"] for c in r["comparisons"] if c["a"] == "good"])
    assert pairs["good"]["p_better"] == pytest.approx(expected_good, abs=1e-15)


def test_one_metric_keeps_its_json_and_the_terminal_shows_the_new_figures(multi):
    out = as_json(multi, "--baseline", "base", "--no-log")
    assert out["metric"] == "acc" and out["family"] == 2 and out["aggregate"] is None
    assert {"iqm", "iqm_low", "iqm_high"} <= set(out["groups"][0]) and "p_better" in out["comparisons"][0]
    text = orch(multi, "compare", "multi", "--metric", "acc", "--metric", "err_k2", "--no-log").stdout
    assert "IQM [CI]" in text and "P(better) [CI]" in text and "over all 2 metrics" in text
    assert "Holm's correction over all 6 comparisons of the 2 metrics together" in " ".join(text.split())


def test_the_paper_table(multi, tmp_path):
    out = as_json(multi, "--metric", "acc", "--metric", "err_k2", "--baseline", "base", "--no-log")
    result = orch(
        multi, "compare", "multi", "--metric", "acc", "--metric", "err_k2", "--baseline", "base", "--no-log",
        "--table", "markdown", "--table-out", str(tmp_path / "t.md"),
    )  # fmt: skip
    assert result.returncode == 0 and f"table in {tmp_path / 't.md'}" in result.stdout, result.stdout
    lines = (tmp_path / "t.md").read_text().splitlines()
    assert lines[0] == "|  | group | acc ↑ | err_k2 ↓ | IQM over the metrics |"
    iqm = {g["name"]: g for g in out["aggregate"]["groups"]}
    rows = {line.split(" | ")[1]: line for line in lines[2:5]}
    assert set(rows) == {"base", "good", "bad"}
    # good: the best on both (bold) and significantly better than base (letter a) on acc, per the JSON
    acc = {c["a"]: c for c in out["reports"][0]["comparisons"]}
    assert acc["good"]["outcome"] == "better" and acc["bad"]["outcome"] == "worse"
    assert "**" in rows["good"].split(" | ")[2] and rows["good"].split(" | ")[2].endswith("<sup>a</sup>")
    assert rows["base"].split(" | ")[2].endswith("<sup>c</sup>")  # base beats bad (c)
    good = iqm["good"]
    assert rows["good"].endswith(f"| **{good['iqm']:.2f} [{good['iqm_low']:.2f}, {good['iqm_high']:.2f}]** |")
    base = next(g for g in out["reports"][0]["groups"] if g["name"] == "base")
    half = base["ci_high"] - base["mean"]
    assert f"{base['mean']:.3f} ± {half:.3f}" in rows["base"] or f"{base['mean']:.4f} ± {half:.4f}" in rows["base"]
    # LaTeX, at its default path in the working directory
    result = orch(multi, "compare", "multi", "--no-log", "--table", "latex", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    tex = (tmp_path / "compare-multi.tex").read_text()
    assert r"\begin{tabular}{llr}" in tex and r"\mathbf{" in tex and "acc $\\uparrow$" in tex


def test_curves_reach_the_group_parents_and_the_report(multi):
    ledger = multi.ledger()
    out = as_json(multi, "--curves", "--table", "markdown", "--table-out", str(multi.root / "t.md"))
    curves = out["curves"]
    assert set(curves) == {"loss"}  # the per-step metric; orch's own system/* samples are left out
    experiment_id = ledger.experiment_id("multi")
    parents = {p.tags["mlflow.runName"]: p for p in ledger.runs(experiment_id, role="group")}
    for name, curve in curves["loss"].items():
        assert curve["steps"] == [0, 1, 2, 3] and set(curve["n"]) == {5}
        for suffix, key in (("mean", "mean"), ("ci_low", "low"), ("ci_high", "high")):
            history = ledger.client.get_metric_history(parents[name].run_id, f"loss_{suffix}")
            assert sorted((m.step, m.value) for m in history) == list(zip(curve["steps"], curve[key], strict=True))
    # a second run over the same seeds writes the same points: MLflow keeps each once
    as_json(multi, "--curves")
    history = ledger.client.get_metric_history(parents["base"].run_id, "loss_mean")
    assert len(history) == 4
    run_id = out["compare_run_id"]
    names = {a.path for a in ledger.client.list_artifacts(run_id)}
    assert {"curves_all.png", "table.md", "report.md", "compare.json"} <= names


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metric", "acc", "--metric", "nope"], "unknown metric 'nope'"),
        (["--metric", "acc:foo"], "expected NAME, NAME:min or NAME:max, got 'acc:foo'"),
        (["--metric", "acc", "--metric", "acc:max"], "metric 'acc' given twice"),
        (["--metric", "acc", "--metric", "err_k2", "--mode", "max"], "--metric NAME:max"),
        (["--table", "html"], "expected one of: latex, markdown, got 'html'"),
        (["--table-out", "x.tex"], "--table-out needs --table"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(multi, tmp_path, args, message):
    result = orch(multi, "compare", "multi", *args, cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in " ".join((result.stdout + result.stderr).split())
    assert list(tmp_path.iterdir()) == []  # no table, no report


def test_performance_profile_and_study_reach_the_report_folder(multi, tmp_path):
    metrics = ("--metric", "acc", "--metric", "err_k2")
    result = orch(multi, "compare", "multi", *metrics, "--no-log", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    for metric in ("acc", "err_k2"):
        folder = tmp_path / metric
        assert (folder / "performance_profile.png").read_bytes()[:4] == b"\x89PNG"
        study = json.loads((folder / "study.json").read_text())
        assert study["metrics"] == ["acc", "err_k2"]
        assert "## Over all metrics (acc, err_k2)" in (folder / "report.md").read_text()
        assert "<h2>Over all metrics (acc, err_k2)</h2>" in (folder / "report.html").read_text()
    assert robust.TAUS[0] == 0 and robust.TAUS[-1] == 1
