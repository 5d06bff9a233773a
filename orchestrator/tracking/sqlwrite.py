"""orch's hot writes to an MLflow SQL store (the embedded sqlite, PostgreSQL), one transaction each.

Through MLflow's client every call on these stores costs 10-40 ms of CPU: each opens its own session and
re-reads the run, and a status change loads the run's params, tags and metrics only to return them
(``update_run_info``). A local run cost orch four such calls to create and three or four to ingest, about
100 ms of the orchestrator's time per run, which is what bounded throughput of short runs. Here a
submission's runs are created in one transaction and each ingestion is one transaction, written through
MLflow's own table models, its own validation and its own latest-metric rule, so the rows are the ones
the client would write; readers (MLflow's UI, search_runs, orch's own SQL reads) see no difference
(tests/test_sqlwrite.py reads them back through the client).

A write the fast path cannot make as the client would (a duplicate metric row from a job's live push, a run
that was deleted meanwhile) raises ``Fallback`` before anything is committed: the caller then goes
through the client, which deduplicates or raises MLflow's own error."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow.entities import Metric
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    from mlflow.tracking import MlflowClient


class Fallback(Exception):
    """This write needs MLflow's client (nothing was committed)."""


@dataclass
class NewRun:
    name: str
    tags: dict[str, str]
    params: dict[str, str]
    status: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)


def writer_for(client: MlflowClient) -> SqlWriter | None:
    """The fast writer of the client's store, or None when it is not an SQL store (a tracking server)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = client._tracking_client.store
    return SqlWriter(store) if isinstance(store, SqlAlchemyStore) else None


@dataclass
class RunWrite:
    """What one ingestion writes to one run."""

    run_id: str
    metrics: list[Metric]
    tags: dict[str, str]
    status: str | None = None
    ended: bool = False
    drop_tags: tuple[str, ...] = ()


class SqlWriter:
    def __init__(self, store: SqlAlchemyStore):
        self.store = store

    def _artifact_root(self, experiment_id: str) -> str:
        experiment = self.store.get_experiment(experiment_id)  # read each time: it may have been deleted since
        if experiment.lifecycle_stage != "active":
            raise Fallback(f"experiment {experiment_id} is not active")
        return experiment.artifact_location

    def create_runs(self, experiment_id: str, runs: list[NewRun]) -> None:
        """Insert the runs with their tags (``mlflow.runName`` added), params and status, as
        ``create_run`` + ``log_batch(params)`` + ``update_run(status)`` would, in one transaction of three
        multi-row inserts (the ORM's unit of work took 2-3 s for 200 runs' 5,000 rows)."""
        from mlflow.store.tracking.dbmodels.models import SqlParam, SqlRun, SqlTag
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
        from mlflow.utils.uri import append_to_uri_path
        from mlflow.utils.validation import _validate_param, _validate_tag
        from sqlalchemy import insert

        root = self._artifact_root(experiment_id)
        now = int(time.time() * 1000)
        rows: dict[str, list[dict[str, Any]]] = {"runs": [], "tags": [], "params": []}
        for new in runs:
            tags = {MLFLOW_RUN_NAME: new.name, **new.tags}
            for key, value in tags.items():
                _validate_tag(key, value)
            for key, value in new.params.items():
                _validate_param(key, value)
            rows["runs"].append(
                {
                    "run_uuid": new.run_id,
                    "name": new.name,
                    "source_type": "UNKNOWN",
                    "source_name": "",
                    "entry_point_name": "",
                    "user_id": tags.get(MLFLOW_USER, "unknown"),
                    "status": new.status,
                    "start_time": now,
                    "end_time": None,
                    "deleted_time": None,
                    "source_version": "",
                    "lifecycle_stage": "active",
                    "artifact_uri": append_to_uri_path(root, new.run_id, "artifacts"),
                    "experiment_id": int(experiment_id),
                }
            )
            rows["tags"] += [{"run_uuid": new.run_id, "key": k, "value": v} for k, v in tags.items()]
            rows["params"] += [{"run_uuid": new.run_id, "key": k, "value": v} for k, v in new.params.items()]
        with self.store.ManagedSessionMaker(read_only=False) as session:
            for model, table in ((SqlRun, "runs"), (SqlTag, "tags"), (SqlParam, "params")):
                if rows[table]:
                    session.execute(insert(model.__table__), rows[table])

    def record_many(self, writes: list[RunWrite]) -> None:
        """For each run: metrics (latest values updated by MLflow's rule), tags (upserted), the status (with
        the end time when ``ended``) and tags to remove; all the runs in one transaction of multi-row
        statements (SQLAlchemy Core: the ORM's unit of work cost ~25 ms a run). A finished burst of
        short runs is one commit, not one per run."""
        import sqlalchemy
        from mlflow.exceptions import MlflowException
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlRun, SqlTag
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
        from mlflow.utils.validation import _validate_metric, _validate_tag
        from sqlalchemy import bindparam, insert, select, update

        writes = [w for w in writes if w.metrics or w.tags or w.status or w.drop_tags]
        if not writes:
            return
        metric_rows: dict[tuple[Any, ...], dict[str, Any]] = {}
        for write in writes:
            if MLFLOW_RUN_NAME in write.tags:
                raise Fallback("renaming a run goes through the client")
            for metric in write.metrics:
                _validate_metric(metric.key, metric.value, metric.timestamp, metric.step)
                is_nan, number = self.store.sanitize_metric_value(metric.value)
                # exact duplicates in one batch are one row, as the client makes them
                metric_rows.setdefault(
                    (write.run_id, metric.key, metric.timestamp, metric.step, number, is_nan),
                    {
                        "run_uuid": write.run_id,
                        "key": metric.key,
                        "value": number,
                        "timestamp": metric.timestamp,
                        "step": metric.step,
                        "is_nan": is_nan,
                    },
                )
            for key, value in write.tags.items():
                _validate_tag(key, value)
        run_ids = [w.run_id for w in writes]
        runs, tags, latest = SqlRun.__table__, SqlTag.__table__, SqlLatestMetric.__table__
        try:
            with self.store.ManagedSessionMaker(read_only=False) as session:
                alive = {
                    row.run_uuid
                    for row in session.execute(
                        select(runs.c.run_uuid).where(runs.c.run_uuid.in_(run_ids), runs.c.lifecycle_stage == "active")
                    )
                }
                if missing := set(run_ids) - alive:
                    raise Fallback(f"run(s) {', '.join(sorted(missing))} missing or deleted")
                if metric_rows:
                    session.execute(insert(SqlMetric.__table__), list(metric_rows.values()))
                    self._update_latest(session, latest, list(metric_rows.values()))
                self._upsert_tags(session, tags, writes)
                stamp = int(time.time() * 1000)
                status_rows = [
                    {"id": w.run_id, "status": w.status, "end": stamp if w.ended else None}
                    for w in writes
                    if w.status is not None
                ]
                for ended in (True, False):
                    rows = [r for r in status_rows if (r["end"] is not None) == ended]
                    values: dict[str, Any] = {"status": bindparam("status")}
                    if ended:
                        values["end_time"] = bindparam("end")
                    if rows:
                        session.execute(update(runs).where(runs.c.run_uuid == bindparam("id")).values(**values), rows)
        except MlflowException as err:  # the session maker wraps what was raised inside it, rolled back
            if isinstance(err.__cause__, (Fallback, sqlalchemy.exc.IntegrityError)):
                raise Fallback(str(err.__cause__)) from None
            raise

    @staticmethod
    def _update_latest(session: Any, latest: Any, rows: list[dict[str, Any]]) -> None:
        """MLflow's latest-value rule (``SqlAlchemyStore._update_latest_metrics_if_necessary``): a name's
        latest value is the one with the highest (step, timestamp, value), compared with the stored one.
        The stored rows are locked in a fixed order (FOR UPDATE, as MLflow does; a no-op on sqlite)."""
        from sqlalchemy import bindparam, insert, select, update

        keys = sorted({(r["run_uuid"], r["key"]) for r in rows})
        stored: dict[tuple[str, str], dict[str, Any]] = {}
        for batch in (keys[i : i + 500] for i in range(0, len(keys), 500)):
            query = (
                select(latest)
                .where(latest.c.run_uuid.in_({run for run, _ in batch}), latest.c.key.in_({key for _, key in batch}))
                .order_by(latest.c.run_uuid, latest.c.key)
                .with_for_update()
            )
            for row in session.execute(query).mappings():
                stored[(row["run_uuid"], row["key"])] = dict(row)
        changed: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            where = (row["run_uuid"], row["key"])
            best = changed.get(where) or stored.get(where)
            if best is None or (row["step"], row["timestamp"], row["value"]) > (
                best["step"],
                best["timestamp"],
                best["value"],
            ):
                changed[where] = row
        fresh = [row for where, row in changed.items() if where not in stored]
        if fresh:
            session.execute(insert(latest), fresh)
        moved = [{**row, "k": row["key"], "r": row["run_uuid"]} for where, row in changed.items() if where in stored]
        if moved:
            session.execute(
                update(latest)
                .where(latest.c.run_uuid == bindparam("r"), latest.c.key == bindparam("k"))
                .values(
                    value=bindparam("value"),
                    timestamp=bindparam("timestamp"),
                    step=bindparam("step"),
                    is_nan=bindparam("is_nan"),
                ),
                moved,
            )

    @staticmethod
    def _upsert_tags(session: Any, tags: Any, writes: list[RunWrite]) -> None:
        """Tags set (updated when present, inserted when not) and tags dropped, for every run at once."""
        from sqlalchemy import bindparam, delete, insert, select, update

        wanted = {(w.run_id, k) for w in writes for k in (*w.tags, *w.drop_tags)}
        if not wanted:
            return
        present = {
            (row.run_uuid, row.key)
            for row in session.execute(
                select(tags.c.run_uuid, tags.c.key).where(
                    tags.c.run_uuid.in_({run for run, _ in wanted}), tags.c.key.in_({key for _, key in wanted})
                )
            )
        }
        upserts = [{"r": w.run_id, "k": k, "v": v} for w in writes for k, v in w.tags.items()]
        if updates := [u for u in upserts if (u["r"], u["k"]) in present]:
            session.execute(
                update(tags)
                .where(tags.c.run_uuid == bindparam("r"), tags.c.key == bindparam("k"))
                .values(value=bindparam("v")),
                updates,
            )
        if inserts := [
            {"run_uuid": u["r"], "key": u["k"], "value": u["v"]} for u in upserts if (u["r"], u["k"]) not in present
        ]:
            session.execute(insert(tags), inserts)
        if drops := [
            {"r": w.run_id, "k": k} for w in writes for k in w.drop_tags if k not in w.tags and (w.run_id, k) in present
        ]:
            session.execute(delete(tags).where(tags.c.run_uuid == bindparam("r"), tags.c.key == bindparam("k")), drops)
