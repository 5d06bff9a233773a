"""What `orch compare` reads of the store, read once: the group parents with their params, and the metric
histories of the seed runs. On an sqlite store (the embedded one) they come straight from the file with the
standard library, as `orch status` reads its runs (``Ledger.runs``): importing MLflow and opening its store
cost a read-only command seconds. Through a tracking server or another SQL store, MLflow's client reads.

A parent is returned in the shape of an MLflow ``Run`` (``info.run_id``, ``data.params/tags/metrics``), so
``grouping`` and ``where`` read either the same way."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from typing import Any

from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.records import Tag, role_filter, search_all

CHUNK = 500  # run ids per IN (...) clause: well under sqlite's limit on bound variables


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    status: str
    start_time: int | None


@dataclass(frozen=True)
class RunData:
    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class StoredRun:
    """A run as MLflow's ``Run`` shows it, read without MLflow."""

    info: RunInfo
    data: RunData


@contextmanager
def _reader(ledger: Ledger) -> Iterator[sqlite3.Connection | None]:
    """A read-only connection to an sqlite store whose tables MLflow created, else None (the client reads)."""
    path = ledger.sqlite_path
    if path is None or not path.exists():
        yield None
        return
    with closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as conn:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='latest_metrics'").fetchone()
        yield conn if found else None


def _chunks(ids: list[str]) -> Iterator[list[str]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


def runs_with_params(ledger: Ledger, experiment_id: str, role: str) -> list[Any]:
    """The experiment's active runs with ``orch.role == role``: params, tags and latest metrics."""
    with _reader(ledger) as conn:
        if conn is None:
            return search_all(ledger.client, experiment_id, role_filter(role))
        rows = conn.execute(
            "SELECT r.run_uuid, r.status, r.start_time FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = ? AND t.value = ? AND r.experiment_id = ? AND r.lifecycle_stage = 'active' "
            "ORDER BY r.start_time",
            (Tag.ROLE, role, int(experiment_id)),
        ).fetchall()
        ids = [row[0] for row in rows]
        params: dict[str, dict[str, str]] = {i: {} for i in ids}
        tags: dict[str, dict[str, str]] = {i: {} for i in ids}
        metrics: dict[str, dict[str, float]] = {i: {} for i in ids}
        for chunk in _chunks(ids):
            marks = ",".join("?" * len(chunk))
            for run_id, key, value in conn.execute(
                f"SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", chunk
            ):
                params[run_id][key] = value
            for run_id, key, value in conn.execute(
                f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", chunk
            ):
                tags[run_id][key] = value
            for run_id, key, value, is_nan in conn.execute(
                f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({marks})", chunk
            ):
                metrics[run_id][key] = float("nan") if is_nan else value
    return [
        StoredRun(RunInfo(run_id, status, start), RunData(params[run_id], tags[run_id], metrics[run_id]))
        for run_id, status, start in rows
    ]


History = dict[str, dict[str, dict[int, float]]]  # run id -> metric -> step -> value


def histories(ledger: Ledger, run_ids: list[str], names: Iterable[str]) -> History:
    """Every logged value of these metrics of these runs, one per step (the latest row a step got: a
    step logged twice, by a live push and by ingestion, is one point)."""
    wanted = list(dict.fromkeys(names))
    out: History = {run_id: {name: {} for name in wanted} for run_id in run_ids}
    if not run_ids or not wanted:
        return out
    with _reader(ledger) as conn:
        if conn is None:
            for run_id in run_ids:
                for name in wanted:
                    rows = sorted(ledger.client.get_metric_history(run_id, name), key=lambda m: m.timestamp)
                    out[run_id][name] = {m.step: m.value for m in rows}
            return out
        names_marks = ",".join("?" * len(wanted))
        for chunk in _chunks(run_ids):
            marks = ",".join("?" * len(chunk))
            for run_id, key, step, value, is_nan in conn.execute(
                f"SELECT run_uuid, key, step, value, is_nan FROM metrics WHERE run_uuid IN ({marks}) "
                f"AND key IN ({names_marks}) ORDER BY timestamp",
                [*chunk, *wanted],
            ):
                out[run_id][key][int(step)] = float("nan") if is_nan else float(value)
    return out


def steps_per_metric(ledger: Ledger, run_id: str) -> dict[str, int]:
    """metric -> how many distinct steps one run logged it at: a metric with more than one has a curve."""
    with _reader(ledger) as conn:
        if conn is None:
            metrics = ledger.client.get_run(run_id).data.metrics
            return {name: len({m.step for m in ledger.client.get_metric_history(run_id, name)}) for name in metrics}
        return dict(
            conn.execute(
                "SELECT key, COUNT(DISTINCT step) FROM metrics WHERE run_uuid = ? GROUP BY key", (run_id,)
            ).fetchall()
        )
