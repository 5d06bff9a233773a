"""orch export / orch import: an experiment on the cluster's tracking server (real mlflow server on
PostgreSQL) -> a bundle -> a laptop's sqlite file, equal run for run, and importing twice adds nothing."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.tracking.transfer import PARENT_TAG, SOURCE_TAG, SOURCE_URI_TAG

pytestmark = pytest.mark.server


def orch(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, f"orch {' '.join(args)}: {result.output}\n{result.exception!r}"
    return result.output


def snapshot(uri: str, name: str) -> dict[str, dict]:
    """Everything an experiment holds, keyed by the original run id (an imported run by its source tag)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    origin = {r.info.run_id: r.data.tags.get(SOURCE_TAG, r.info.run_id) for r in runs}
    out = {}
    for run in runs:
        tags = {k: v for k, v in run.data.tags.items() if k not in (SOURCE_TAG, SOURCE_URI_TAG)}
        if PARENT_TAG in tags:
            tags[PARENT_TAG] = origin.get(tags[PARENT_TAG], "<outside>")
        metrics = sorted(
            (m.key, repr(m.value) if math.isnan(m.value) else str(m.value), m.timestamp, m.step)
            for key in run.data.metrics
            for m in client.get_metric_history(run.info.run_id, key)
        )
        with tempfile.TemporaryDirectory() as tmp:
            files = {}
            if client.list_artifacts(run.info.run_id):
                root = Path(client.download_artifacts(run.info.run_id, "", tmp))
                files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        out[origin[run.info.run_id]] = {
            "name": run.info.run_name,
            "status": run.info.status,
            "start": run.info.start_time,
            "end": run.info.end_time,
            "tags": tags,
            "params": dict(run.data.params),
            "metrics": metrics,
            "artifacts": files,
        }
    return out


def test_export_import_round_trip_from_the_server_to_sqlite_is_equal_and_idempotent(stack, tmp_path):
    spec = tmp_path / "xfer.yaml"
    spec.write_text(
        yaml.safe_dump(
            {
                "name": "xfer",
                "workload": "smoke",
                "seeds": 2,
                "workdir": str(tmp_path / "jobs"),
                "params": {"steps": 25},
                "variants": {"ok": {}, "diverges": {"nan_at_step": 10}},
            }
        )
    )
    CliRunner().invoke(app, ["submit", str(spec), "--tracking-uri", stack.uri])  # exits 1: 'diverges' fails (NaN)
    from orchestrator.tracking.ledger import Ledger

    ledger = Ledger(stack.uri)
    experiment_id = ledger.experiment_id("xfer")
    seeds = ledger.runs(experiment_id)
    assert len(seeds) == 4 and {r.status for r in seeds} == {"FINISHED", "FAILED"}
    ledger.log_text(seeds[0].run_id, "hello from the cluster\n", "notes/hello.txt")

    source = snapshot(stack.uri, "xfer")
    assert len(source) == 6 and sum(PARENT_TAG in r["tags"] for r in source.values()) == 4
    assert any(m[1] == "nan" for r in source.values() for m in r["metrics"])  # NaN metrics travel too

    bundle, laptop = tmp_path / "xfer.bundle", f"sqlite:///{tmp_path / 'laptop' / 'mlflow.db'}"
    orch("export", "xfer", "-o", str(bundle), "--tracking-uri", stack.uri)
    orch("import", str(bundle), "--tracking-uri", laptop)
    copy = snapshot(laptop, "xfer")
    assert copy == source
    assert any(r["artifacts"].get("notes/hello.txt") == b"hello from the cluster\n" for r in copy.values())

    orch("import", str(bundle), "--tracking-uri", laptop)  # again: nothing added, nothing changed
    assert snapshot(laptop, "xfer") == source

    # And onward: the laptop's copy exported and imported elsewhere still points at the cluster's run ids.
    orch("export", "xfer", "-o", str(tmp_path / "again.bundle"), "--tracking-uri", laptop)
    other = f"sqlite:///{tmp_path / 'other' / 'mlflow.db'}"
    orch("import", str(tmp_path / "again.bundle"), "--name", "xfer", "--tracking-uri", other)
    assert snapshot(other, "xfer") == source


def test_import_of_something_that_is_not_a_bundle_is_a_clear_error(tmp_path):
    result = CliRunner().invoke(app, ["import", str(tmp_path), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"])
    assert result.exit_code == 2 and "not an orch export bundle" in result.output
    result = CliRunner().invoke(
        app, ["export", "nope", "-o", str(tmp_path / "b"), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    )
    assert result.exit_code == 2 and "no experiment named 'nope'" in result.output
