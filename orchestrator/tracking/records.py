"""orch's data model in MLflow, written down once: the run roles, the ``orch.*`` tag names, the statuses,
the record of a run, which attempt stands for a run key, and the paginated search every reader uses.

An experiment is one spec name. In it: one ``group`` run per configuration (variant x grid point; its
children are the seeds), one ``seed`` run per attempt at a run key, a ``sweep`` run per ``orch tune`` with
a ``trial`` child per trial, and a ``compare`` run per ``orch compare`` report."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from orchestrator.vocabulary import Role as Role  # re-exported: the readers of records name them from here
from orchestrator.vocabulary import RunStatus
from orchestrator.vocabulary import Tag as Tag

# the run statuses by name, as every reader of records uses them (orchestrator/vocabulary.py defines them)
SCHEDULED, RUNNING = RunStatus.SCHEDULED, RunStatus.RUNNING
FINISHED, FAILED, KILLED = RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED
EXPERIMENT_KIND = "mlflow.experimentKind"  # an experiment tag: which page the MLflow UI opens it on
ACTIVE = (RUNNING, SCHEDULED)  # a job may still write to the run
TERMINAL = (FINISHED, FAILED, KILLED)
BATCH = 1000  # MLflow's limit of metrics (and tags) per log_batch
PAGE = 10000  # runs per search_runs page


@dataclass(frozen=True)
class RunRecord:
    """What reconcile, status and compare read of a run: status, tags and latest metrics (no params)."""

    run_id: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]
    start_time: int | None = None

    @property
    def key(self) -> str:
        return self.tags.get(Tag.KEY, "")


def by_key(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Attempts per run key, latest first."""
    grouped: dict[str, list[RunRecord]] = defaultdict(list)
    for record in records:
        grouped[record.key].append(record)
    for recs in grouped.values():
        recs.sort(key=lambda r: r.start_time or 0, reverse=True)
    return grouped


def standing(attempts: list[RunRecord]) -> RunRecord:
    """The attempt that stands for a run key (latest first): its FINISHED one if any, else the latest."""
    return next((r for r in attempts if r.status == FINISHED), attempts[0])


def latest_per_key(records: list[RunRecord]) -> list[RunRecord]:
    """One record per run key: the one that stands for it. Every reader counts runs this way."""
    return [standing(recs) for recs in by_key(records).values()]


def role_filter(role: str) -> str:
    return f"tags.`{Tag.ROLE}` = '{role}'"


def search_all(client: Any, experiment_id: str, filter_string: str = "", page: int = PAGE) -> list[Any]:
    """Every MLflow run of the experiment matching ``filter_string``, across all result pages."""
    runs: list[Any] = []
    token = None
    while True:
        found = client.search_runs([experiment_id], filter_string=filter_string, max_results=page, page_token=token)
        runs += list(found)
        token = found.token
        if not token:
            return runs


def chunks(items: list[Any], size: int = BATCH) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
