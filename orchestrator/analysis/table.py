"""``orch.runs(name)``: an experiment's seed runs as a pandas DataFrame, one row per run key (the attempt
that stands for it, ``records.standing``), so that a notebook counts exactly the runs ``orch compare`` and
``orch status`` count; MLflow's own ``search_runs`` returns every attempt."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import yaml

from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.records import Role, RunRecord, Tag, latest_per_key, role_filter, search_all

if TYPE_CHECKING:
    import pandas

COLUMNS = ("run_id", "key", "group", "variant", "seed", "status")


def _typed(text: str) -> Any:
    """MLflow keeps params as strings; give them back their YAML types (0.1, true, [1, 2])."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def runs_frame(ledger: Ledger, experiment_id: str, records: list[RunRecord]) -> pandas.DataFrame:
    import pandas

    kept = latest_per_key(records)
    params = {
        run.info.run_id: run.data.params for run in search_all(ledger.client, experiment_id, role_filter(Role.SEED))
    }
    rows = []
    for record in kept:
        row: dict[str, Any] = {
            "run_id": record.run_id,
            "key": record.key,
            "group": record.tags.get(Tag.GROUP, ""),
            "variant": record.tags.get(Tag.VARIANT, ""),
            "seed": int(record.tags.get(Tag.SEED, -1)),
            "status": record.status,
        }
        row.update({f"params.{k}": _typed(v) for k, v in sorted(params.get(record.run_id, {}).items())})
        row.update({f"metrics.{k}": v for k, v in sorted(record.metrics.items())})
        rows.append(row)
    frame = pandas.DataFrame(rows, columns=None if rows else list(COLUMNS))
    return frame.sort_values(["variant", "seed"], kind="stable").reset_index(drop=True) if rows else frame
