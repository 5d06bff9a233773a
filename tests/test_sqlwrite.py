"""The one-transaction writer (orchestrator/tracking/sqlwrite.py) writes what MLflow's client would: the same
records read back through the client, MLflow's latest-metric rule, MLflow's errors."""

from __future__ import annotations

import math

import pytest
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from orchestrator.tracking.ledger import Ledger


def _pair(tmp_path) -> tuple[Ledger, Ledger, str]:
    """Two ledgers on one store: the fast writer's and the client's."""
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    fast, slow = Ledger(uri), Ledger(uri)
    slow._writer = None
    assert fast._sql is not None
    return fast, slow, fast.experiment_id("w", create=True)


def _seen(ledger: Ledger, run_id: str) -> dict:
    run = ledger.client.get_run(run_id)
    tags = {k: v for k, v in run.data.tags.items() if k != "mlflow.runName"}
    return {
        "name": run.info.run_name,
        "status": run.info.status,
        "tags": tags,
        "params": run.data.params,
        "metrics": {k: repr(v) for k, v in run.data.metrics.items()},
        "ended": run.info.end_time is not None,
        "artifact_uri": run.info.artifact_uri.replace(run_id, "<id>"),
        "history": sorted((m.step, m.value) for m in ledger.client.get_metric_history(run_id, "loss")),
    }


def test_the_fast_writer_records_what_the_client_records(tmp_path):
    fast, slow, experiment = _pair(tmp_path)
    parent = slow.create_run(experiment, "parent", {"orch.role": "group"}, {})
    ids = []
    for ledger in (fast, slow):
        run_id = ledger.create_run(
            experiment,
            "a/seed0",
            {"orch.role": "seed", "orch.key": "k"},
            {"lr": 0.1, "layers": [1, 2]},
            parent_id=parent,
        )
        ledger._record(
            run_id,
            [
                Metric("loss", 1.0, 1000, 0),
                Metric("loss", 0.5, 1001, 1),
                Metric("loss", 0.5, 1001, 1),
            ],  # an exact duplicate: one row
            {"orch.attempt": 1},
            "RUNNING",
        )
        ledger._record(
            run_id, [Metric("loss", 0.7, 999, 1), Metric("acc", math.nan, 1002, 1)], {"orch.error": "earlier attempt"}
        )  # an older timestamp at step 1: not the latest
        ledger._record(run_id, [], {}, "FINISHED", ended=True)  # FINISHED drops the earlier attempt's error
        ids.append(run_id)
    seen_fast, seen_slow = (_seen(ledger, run_id) for ledger, run_id in zip((fast, slow), ids, strict=False))
    assert seen_fast == seen_slow
    assert seen_fast["status"] == "FINISHED" and seen_fast["ended"]
    assert seen_fast["metrics"] == {"loss": "0.5", "acc": "nan"}
    assert seen_fast["history"] == [(0, 1.0), (1, 0.5), (1, 0.7)]
    assert "orch.error" not in seen_fast["tags"] and seen_fast["tags"]["mlflow.parentRunId"] == parent
    assert seen_fast["params"] == {"lr": "0.1", "layers": "[1, 2]"}
    runs = fast.runs(experiment)  # orch's own SQL read of the same rows
    assert {r.run_id for r in runs} == set(ids) and {r.status for r in runs} == {"FINISHED"}


def test_a_submission_is_created_in_one_call_with_distinct_ids(tmp_path):
    fast, _, experiment = _pair(tmp_path)
    ids = fast.create_runs(experiment, [(f"r{i}", {"orch.role": "seed"}, {"i": i}, None) for i in range(50)])
    assert len(set(ids)) == 50
    assert sorted(int(fast.client.get_run(i).data.params["i"]) for i in ids) == list(range(50))
    assert {fast.client.get_run(i).info.status for i in ids} == {"SCHEDULED"}


def test_mlflow_refusals_stay_mlflow_refusals(tmp_path):
    fast, _, experiment = _pair(tmp_path)
    run_id = fast.create_run(experiment, "r", {}, {})
    with pytest.raises(MlflowException, match="Names may only contain"):
        fast._record(run_id, [Metric("bad\nname", 1.0, 1, 0)], {})
    fast.client.delete_run(run_id)
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        fast._record(run_id, [Metric("loss", 1.0, 1, 0)], {})  # the client's own error for a deleted run
    fast.client.delete_experiment(experiment)
    with pytest.raises(MlflowException, match="active"):
        fast.create_run(experiment, "r2", {}, {})
