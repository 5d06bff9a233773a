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
            rows["runs"].append({
                "run_uuid": new.run_id, "name": new.name, "source_type": "UNKNOWN", "source_name": "",
                "entry_point_name": "", "user_id": tags.get(MLFLOW_USER, "unknown"), "status": new.status,
                "start_time": now, "end_time": None, "deleted_time": None, "source_version": "",
                "lifecycle_stage": "active", "artifact_uri": append_to_uri_path(root, new.run_id, "artifacts"),
                "experiment_id": int(experiment_id)})
            rows["tags"] += [{"run_uuid": new.run_id, "key": k, "value": v} for k, v in tags.items()]
            rows["params"] += [{"run_uuid": new.run_id, "key": k, "value": v} for k, v in new.params.items()]
        with self.store.ManagedSessionMaker(read_only=False) as session:
            for model, table in ((SqlRun, "runs"), (SqlTag, "tags"), (SqlParam, "params")):
                if rows[table]:
                    session.execute(insert(model.__table__), rows[table])

    def record(self, run_id: str, metrics: list[Metric], tags: dict[str, str], status: str | None = None,
               ended: bool = False, drop_tags: tuple[str, ...] = ()) -> None:
        """Metrics (latest values updated by MLflow's rule), tags (upserted), then the status (with the
        end time when ``ended``) and tags to remove, in one transaction."""
        import sqlalchemy
        from mlflow.exceptions import MlflowException
        from mlflow.store.tracking.dbmodels.models import SqlMetric, SqlRun, SqlTag
        from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
        from mlflow.utils.validation import _validate_metric, _validate_tag

        if MLFLOW_RUN_NAME in tags:
            raise Fallback("renaming a run goes through the client")
        for metric in metrics:
            _validate_metric(metric.key, metric.value, metric.timestamp, metric.step)
        for key, value in tags.items():
            _validate_tag(key, value)
        rows: dict[tuple[Any, ...], SqlMetric] = {}
        for metric in metrics:  # exact duplicates in one batch are one row, as the client makes them
            is_nan, number = self.store.sanitize_metric_value(metric.value)
            rows.setdefault((metric.key, metric.timestamp, metric.step, number, is_nan),
                            SqlMetric(run_uuid=run_id, key=metric.key, value=number, timestamp=metric.timestamp,
                                      step=metric.step, is_nan=is_nan))
        try:
            with self.store.ManagedSessionMaker(read_only=False) as session:
                run = session.get(SqlRun, run_id)
                if run is None or run.lifecycle_stage != "active":
                    raise Fallback(f"run {run_id} is missing or deleted")
                if rows:
                    session.add_all(list(rows.values()))
                    self.store._update_latest_metrics_if_necessary(list(rows.values()), session)
                if tags or drop_tags:
                    keys = [*tags, *drop_tags]
                    current = {t.key: t for t in session.query(SqlTag).filter(SqlTag.run_uuid == run_id,
                                                                                SqlTag.key.in_(keys))}
                    for key, value in tags.items():
                        if key in current:
                            current[key].value = value
                        else:
                            session.add(SqlTag(run_uuid=run_id, key=key, value=value))
                    for key in drop_tags:
                        if key in current and key not in tags:
                            session.delete(current[key])
                if status is not None:
                    run.status = status
                if ended:
                    run.end_time = int(time.time() * 1000)
                session.flush()  # a duplicate row fails here, inside the transaction: rolled back
        except MlflowException as err:  # the session maker wraps what was raised inside it, rolled back
            if isinstance(err.__cause__, (Fallback, sqlalchemy.exc.IntegrityError)):
                raise Fallback(str(err.__cause__)) from None
            raise
