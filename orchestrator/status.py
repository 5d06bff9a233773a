"""Per-group summary of an experiment: finished / running / failed / missing, and the main metric."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

from orchestrator.driver import latest_per_key
from orchestrator.ledger import Ledger, RunRecord


@dataclass
class GroupStatus:
    group: str
    label: str
    variant: str
    finished: int
    running: int
    pending: int
    failed: int
    missing: int
    metric: str
    mode: str
    metric_mean: float | None
    metric_values: list[float]
    run_id: str

    def to_dict(self) -> dict:
        return asdict(self)


def experiment_status(ledger: Ledger, experiment_id: str, records: list[RunRecord] | None = None,
                      parents: list[RunRecord] | None = None) -> list[GroupStatus]:
    """Pass the seed and group records when the caller already searched MLflow (a search of 500 runs
    costs about a second on sqlite: do it once per command)."""
    records = ledger.runs(experiment_id) if records is None else records
    parents = ledger.runs(experiment_id, role="group") if parents is None else parents
    per_group: dict[str, list] = {}
    for best in latest_per_key(records):
        per_group.setdefault(best.tags.get("orch.group", ""), []).append(best)
    out = []
    for parent in sorted(parents, key=lambda r: r.start_time or 0):
        group = parent.tags.get("orch.group", "")
        recs = per_group.get(group, [])
        metric = parent.tags.get("orch.metric", "")
        count = lambda *states: sum(1 for r in recs if r.status in states)  # noqa: E731
        values = [r.metrics[metric] for r in recs if r.status == "FINISHED" and metric in r.metrics
                  and not math.isnan(r.metrics[metric])]
        requested = int(parent.tags.get("orch.seeds_requested", 0))
        out.append(GroupStatus(
            group=group, label=parent.tags.get("mlflow.runName", group), variant=parent.tags.get("orch.variant", ""),
            finished=count("FINISHED"), running=count("RUNNING"), pending=count("SCHEDULED"),
            failed=count("FAILED", "KILLED"), missing=max(0, requested - len(recs)),
            metric=metric, mode=parent.tags.get("orch.mode", "min"),
            metric_mean=statistics.fmean(values) if values else None, metric_values=values, run_id=parent.run_id))
    return out
