"""Sweep analytics on a sweep whose important dimension is known by construction: smoke's final loss is its
`offset` plus a little noise, and `checkpoint_every` cannot change a result. Optuna's evaluators (fANOVA,
PED-ANOVA) must rank offset first, on synthetic trials and on a real Ray Tune sweep, whose parent run then
holds the importances and the parallel-coordinates plot, and whose `orch status` shows them."""

from __future__ import annotations

import json
import random

import pytest

from orchestrator.tune.analytics import importances, study_of
from orchestrator.tune.section import Dimension, TuneConfig, TuneSection
from orchestrator.tune.sweep import TrialRow, run_sweep
from orchestrator.vocabulary import TrialStatus

SPACE = {"offset": {"uniform": [0.0, 1.0]}, "checkpoint_every": {"choice": [1, 2, 3]}}


def test_optuna_evaluators_rank_the_dimension_that_decides_the_score_first():
    rng = random.Random(1)
    rows = []
    for i in range(10):
        offset, every = rng.uniform(0, 1), rng.choice([1, 2, 3])
        rows.append(
            TrialRow(
                f"t{i}",
                TrialStatus.FINISHED,
                offset + 0.01 * rng.gauss(0, 1),
                {"offset": offset, "checkpoint_every": every},
                3,
            )
        )
    rows.append(TrialRow("failed", TrialStatus.FAILED, None, {"offset": 0.5, "checkpoint_every": 1}, 1))
    dims = (Dimension("offset", "uniform", (0.0, 1.0)), Dimension("checkpoint_every", "choice", (1, 2, 3)))
    config = TuneConfig(TuneSection.model_validate({"space": SPACE}), "final_loss", "min", "loss", dims)
    study = study_of(rows, config)
    assert study is not None and len(study.trials) == 10  # the finished trials only
    found = importances(study)
    assert set(found) == {"fanova", "ped_anova"}
    for name, values in found.items():
        assert values["offset"] > 0.7 > values["checkpoint_every"], (name, values)
        assert sum(values.values()) == pytest.approx(1.0)
    assert study_of(rows[:1], config) is None  # one finished trial: nothing to compare


def test_a_sweep_records_its_importances_and_parallel_coordinates_on_its_parent(store, ray_local):
    spec = store.spec(
        {
            "name": "an",
            "workload": "smoke",
            "params": {"steps": 3, "noise": 0.01},
            "resources": {"cpus": 1, "mem_gb": 0.5},
            "tune": {"metric": "final_loss", "report": "loss", "num_samples": 10, "search_seed": 3, "space": SPACE},
        }
    )
    result = run_sweep(spec, tracking_uri=store.uri, best_path=None, echo=lambda *a, **k: None)
    assert len(result.rows) == 10 and {r.status for r in result.rows} == {"FINISHED"}
    ledger = store.ledger()
    parent = ledger.get(result.parent_run_id)
    for name in ("fanova", "ped_anova"):
        offset = parent.metrics[f"importance/{name}/offset"]
        assert offset > 0.7 > parent.metrics[f"importance/{name}/checkpoint_every"], (name, parent.metrics)
    artifacts = {a.path for a in ledger.client.list_artifacts(result.parent_run_id, "analytics")}
    assert artifacts == {"analytics/importance.json", "analytics/parallel_coordinates.png"}
    local = ledger.client.download_artifacts(result.parent_run_id, "analytics", str(store.root / "dl"))
    saved = json.loads((store.root / "dl" / "analytics" / "importance.json").read_text())
    assert saved["trials"] == 10 and saved["importance"] == result.importance
    assert (store.root / "dl" / "analytics" / "parallel_coordinates.png").read_bytes()[:4] == b"\x89PNG", local

    (sweep,) = json.loads(store.orch("status", "an", "--json", check=True).output)["sweeps"]
    assert sweep["importance"]["fanova"]["offset"] == pytest.approx(result.importance["fanova"]["offset"])
    table = store.orch("status", "an", check=True).output
    assert "which params mattered" in table and "fANOVA" in table and "PED-ANOVA" in table
