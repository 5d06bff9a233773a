"""MLflow as the system of record. One experiment per spec name, one parent run per group
(``orch.role=group``), one child run per seed (``orch.role=seed``), linked by ``mlflow.parentRunId``.

Only the orchestrator process writes here (jobs write journals, ingested below), so one sqlite file
serves many concurrent jobs without MLflow's schema-migration race between processes that open a
fresh store at once (docs/architecture.md)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any, Literal, overload

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # a lab's cluster should not phone home
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # no "View run" links in orch's output
# orch's terminal shows orch's output: no "Creating initial MLflow database tables" INFO lines from a new store,
# no tqdm "Downloading artifacts" bars; MLflow's warnings still show. The level is read when mlflow is imported,
# so it is also set on the logger, for a process that imported mlflow before this module.
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
logging.getLogger("mlflow").setLevel(os.environ["MLFLOW_LOGGING_LEVEL"].upper())
# MLflow logs every SQLAlchemy error with its traceback before re-raising it: the error reaches orch, which says
# it in one line (a locked store, a full disk) or raises it whole; the logged copy only doubled it.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)

import sqlite3  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import closing, contextmanager  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

from orchestrator.errors import InputError  # noqa: E402
from orchestrator.job.rundir import RunDir  # noqa: E402
from orchestrator.spec.tracking_uri import sqlite_path  # noqa: E402
from orchestrator.tracking import auth, ingest, schema, sqlite  # noqa: E402
from orchestrator.tracking.lock import SubmitLock  # noqa: E402
from orchestrator.tracking.records import (  # noqa: E402
    BATCH,
    EXPERIMENT_KIND,
    FINISHED,
    KILLED,
    RUNNING,
    SCHEDULED,
    TERMINAL,
    RunRecord,
    Tag,
    chunks,
    role_filter,
    search_all,
)
from orchestrator.tracking.sqlwrite import RunWrite  # noqa: E402

if TYPE_CHECKING:
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from orchestrator.tracking.sqlwrite import NewRun, SqlWriter


class Ledger:
    def __init__(self, uri: str, create: bool = True):
        """``create=False`` (read-only commands): a missing sqlite store is an error, not a new file."""
        self.uri = uri
        self.sqlite_path = sqlite_path(uri)
        self._client: MlflowClient | None = None
        self._writer: SqlWriter | Literal[False] | None = False  # False: not looked up yet
        self._batch_route = True  # a tracking server may have orch's batch route (False: it said it has not)
        auth.use(uri)  # an `orch server` with auth: its credentials into the environment, for jobs too
        if self.sqlite_path is not None:
            if not create and not self.sqlite_path.exists():
                raise InputError(
                    f"no MLflow store at {self.sqlite_path} (nothing submitted from here yet?); "
                    "pass --tracking-uri or run from the project directory"
                )
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
            if not self.sqlite_path.exists():
                # sqlite creates its file 0644 & ~umask: read-only for a lab group that shares the store
                # (ORCH_UMASK=007, orchestrator/privacy.py); created here 0666 & ~umask, the umask decides
                os.close(os.open(self.sqlite_path, os.O_CREAT | os.O_WRONLY, 0o666))
                self.client  # noqa: B018 - a new store: MLflow creates its tables now, as a writer expects

    @property
    def client(self) -> MlflowClient:
        """MLflow's client, made on first use: importing MLflow and opening its store cost a read-only
        command (`orch status` with nothing running) seconds it does not need, since reads of an sqlite
        store go straight to the file (``runs``, ``experiment_id``)."""
        if self._client is None:
            from mlflow.tracking import MlflowClient

            schema.install()
            if self.sqlite_path is None:
                self._client = MlflowClient(tracking_uri=self.uri)
                return self._client
            sqlite.install()
            # Two processes opening a new store at once would both run MLflow's migrations on it, and one
            # fails half-way ("expected to match one row ... in 'alembic_version'"): one at a time.
            with SubmitLock(
                self.sqlite_path.with_name(f".{self.sqlite_path.name}.init.lock"), "the MLflow store", wait_s=300
            ):
                client = MlflowClient(tracking_uri=self.uri)
                client._tracking_client.store  # noqa: B018 - opening it creates or checks the tables, now
            self._client = client
        return self._client

    @contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection | None]:
        """A read-only connection to an sqlite store that MLflow has set up, else None (the client reads)."""
        if self.sqlite_path is None or not self.sqlite_path.exists():
            yield None
            return
        with closing(sqlite3.connect(f"{self.sqlite_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)) as conn:
            tables = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='latest_metrics'")
            yield conn if tables.fetchone() else None  # None: MLflow has not created its tables yet

    # -- experiments ---------------------------------------------------------------------------
    @overload
    def experiment_id(self, name: str, create: Literal[True]) -> str: ...

    @overload
    def experiment_id(self, name: str, create: bool = False) -> str | None: ...

    def experiment_id(self, name: str, create: bool = False) -> str | None:
        with self._reader() as conn:  # the common case, an active experiment, without MLflow
            if conn is not None:
                row = conn.execute(
                    "SELECT experiment_id, lifecycle_stage FROM experiments WHERE name = ?", (name,)
                ).fetchone()
                if row is not None and row[1] == "active":
                    return str(row[0])
                if row is None and not create:
                    return None
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                self.client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        if not create:
            return None
        location = None
        if self.sqlite_path is not None:
            location = (self.sqlite_path.parent / "artifacts" / name).resolve().as_uri()
        # MLflow 3's UI opens an experiment of unknown kind on its GenAI "Traces" page: orch's are training runs
        return self.client.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND: "custom_model_development"}
        )

    # -- reading -------------------------------------------------------------------------------
    def runs(self, experiment_id: str, role: str = "seed") -> list[RunRecord]:
        """The experiment's runs with ``orch.role == role``: status, tags and latest metrics (no params).

        On a SQL store this reads just those columns (0.2 s for 2,000 runs); MLflow's search_runs would
        also build an object for every param of every run (1.4 s), which reconcile and status never read.
        Through a tracking server it goes through search_runs."""
        with self._reader() as conn:
            if conn is not None:
                return self._runs_sqlite(conn, experiment_id, role)
        engine = getattr(self.client._tracking_client.store, "engine", None)
        if engine is not None:
            return self._runs_sql(engine, experiment_id, role)
        return [
            RunRecord(r.info.run_id, r.info.status, r.data.tags, r.data.metrics, r.info.start_time)
            for r in search_all(self.client, experiment_id, role_filter(role))
        ]

    @staticmethod
    def _runs_sqlite(conn: sqlite3.Connection, experiment_id: str, role: str) -> list[RunRecord]:
        """The same rows as ``_runs_sql``, with the standard library: no MLflow or SQLAlchemy import."""
        ids = (
            "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid WHERE t.key = ? AND t.value = ? "
            "AND r.experiment_id = ? AND r.lifecycle_stage = 'active'"
        )
        return Ledger._records_sqlite(conn, ids, (Tag.ROLE, role, int(experiment_id)))

    @staticmethod
    def _records_sqlite(conn: sqlite3.Connection, ids: str, args: tuple) -> list[RunRecord]:
        """The runs whose ids the query ``ids`` selects, newest first: status, start, tags, latest metrics."""
        rows = conn.execute(
            f"SELECT run_uuid, status, start_time FROM runs WHERE run_uuid IN ({ids}) ORDER BY start_time DESC", args
        ).fetchall()
        tags: dict[str, dict[str, str]] = {run_id: {} for run_id, _, _ in rows}
        for run_id, key, value in conn.execute(
            f"SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({ids})", args
        ):
            tags[run_id][key] = value
        metrics: dict[str, dict[str, float]] = {run_id: {} for run_id, _, _ in rows}
        for run_id, key, value, is_nan in conn.execute(
            f"SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({ids})", args
        ):
            metrics[run_id][key] = float("nan") if is_nan else value
        return [RunRecord(run_id, status, tags[run_id], metrics[run_id], start) for run_id, status, start in rows]

    def find(self, run: str) -> RunRecord | None:
        """An active run by MLflow run id, else by orch key (its latest attempt), else by scheduler job id.
        ``run`` is checked by the caller: it goes into MLflow's filter strings when there is no sqlite file."""
        with self._reader() as conn:
            if conn is not None:
                active = "SELECT run_uuid FROM runs WHERE lifecycle_stage = 'active'"
                by_tag = f"SELECT run_uuid FROM tags WHERE key = ? AND value = ? AND run_uuid IN ({active})"
                found = self._records_sqlite(conn, f"{active} AND run_uuid = ?", (run,))
                for tag in (Tag.KEY, Tag.JOB_ID):
                    found = found or self._records_sqlite(conn, by_tag, (tag, run))
                return found[0] if found else None
        from mlflow.exceptions import MlflowException

        if len(run) == 32:
            try:
                return self.get(run)
            except MlflowException:
                pass
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        for tag in (Tag.KEY, Tag.JOB_ID):
            hits = self.client.search_runs(experiments, filter_string=f"tags.`{tag}` = '{run}'", max_results=1)
            if hits:
                return self.get(hits[0].info.run_id)
        return None

    def experiments(self) -> list[tuple[str, str, int | None]]:
        """The store's active experiments: id, name, and their last activity in ms since the epoch (the latest
        start, end or metric of any of their runs)."""
        with self._reader() as conn:
            if conn is not None:
                rows = conn.execute(
                    "SELECT e.experiment_id, e.name, MAX(MAX(COALESCE(r.end_time, 0), COALESCE(r.start_time, 0))),"
                    " (SELECT MAX(m.timestamp) FROM latest_metrics m JOIN runs mr ON mr.run_uuid = m.run_uuid"
                    "  WHERE mr.experiment_id = e.experiment_id)"
                    " FROM experiments e LEFT JOIN runs r ON r.experiment_id = e.experiment_id"
                    " WHERE e.lifecycle_stage = 'active' GROUP BY e.experiment_id"
                ).fetchall()
                return [(str(i), name, max(a or 0, m or 0) or None) for i, name, a, m in rows]
        out = []
        for experiment in self.client.search_experiments():
            found = self.client.search_runs([experiment.experiment_id], max_results=1, order_by=["start_time DESC"])
            out.append((experiment.experiment_id, experiment.name, found[0].info.start_time if found else None))
        return out

    @staticmethod
    def _runs_sql(engine, experiment_id: str, role: str) -> list[RunRecord]:
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlRun, SqlTag
        from sqlalchemy import and_, select

        runs_t, tags_t, metrics_t = SqlRun.__table__, SqlTag.__table__, SqlLatestMetric.__table__
        ids = (
            select(tags_t.c.run_uuid)
            .join(runs_t, runs_t.c.run_uuid == tags_t.c.run_uuid)
            .where(
                and_(
                    tags_t.c.key == Tag.ROLE,
                    tags_t.c.value == role,
                    runs_t.c.experiment_id == int(experiment_id),
                    runs_t.c.lifecycle_stage == "active",
                )
            )
        )
        with engine.connect() as conn:
            rows = conn.execute(
                select(runs_t.c.run_uuid, runs_t.c.status, runs_t.c.start_time).where(runs_t.c.run_uuid.in_(ids))
            ).all()
            tags: dict[str, dict[str, str]] = {run_id: {} for run_id, _, _ in rows}
            for run_id, key, value in conn.execute(
                select(tags_t.c.run_uuid, tags_t.c.key, tags_t.c.value).where(tags_t.c.run_uuid.in_(ids))
            ):
                tags[run_id][key] = value
            metrics: dict[str, dict[str, float]] = {run_id: {} for run_id, _, _ in rows}
            for run_id, key, value, is_nan in conn.execute(
                select(metrics_t.c.run_uuid, metrics_t.c.key, metrics_t.c.value, metrics_t.c.is_nan).where(
                    metrics_t.c.run_uuid.in_(ids)
                )
            ):
                metrics[run_id][key] = float("nan") if is_nan else value
        return [RunRecord(run_id, status, tags[run_id], metrics[run_id], start) for run_id, status, start in rows]

    def get(self, run_id: str) -> RunRecord:
        r = self.client.get_run(run_id)
        return RunRecord(r.info.run_id, r.info.status, r.data.tags, r.data.metrics, r.info.start_time)

    # -- writing -------------------------------------------------------------------------------
    def create_run(
        self,
        experiment_id: str,
        name: str,
        tags: dict[str, str],
        params: dict[str, Any],
        parent_id: str | None = None,
        status: str = SCHEDULED,
    ) -> str:
        (run_id,) = self.create_runs(experiment_id, [(name, tags, params, parent_id)], status)
        return run_id

    def create_runs(
        self,
        experiment_id: str,
        runs: list[tuple[str, dict[str, str], dict[str, Any], str | None]],
        status: str = SCHEDULED,
        run_ids: list[str] | None = None,
    ) -> list[str]:
        """Create runs given as (name, tags, params, parent id), in one transaction on an SQL store; with
        ``run_ids``, under those ids (an SQL store only: through a tracking server, the server names runs)."""
        if not runs:
            return []
        from orchestrator.tracking.sqlwrite import Fallback, NewRun

        new = [
            NewRun(
                name,
                {**tags, **({"mlflow.parentRunId": parent} if parent else {})},
                {k: str(v)[:6000] for k, v in params.items()},
                status,
            )
            for name, tags, params, parent in runs
        ]
        for item, run_id in zip(new, run_ids or [], strict=False):
            item.run_id = run_id
        if self._sql is not None:
            try:
                self._sql.create_runs(experiment_id, new)
                return [n.run_id for n in new]
            except Fallback:
                if run_ids is not None:
                    raise
                # else the client raises MLflow's own error (a deleted experiment)
        elif run_ids is not None:
            raise ValueError(f"{self.uri} is not an SQL store: it names its runs itself")
        return [self._create_with_client(experiment_id, n) for n in new]

    def _create_with_client(self, experiment_id: str, new: NewRun) -> str:
        from mlflow.entities import Param

        run_id = self.client.create_run(experiment_id, run_name=new.name, tags=new.tags).info.run_id
        for chunk in chunks([Param(k, v) for k, v in new.params.items()], 100):
            self.client.log_batch(run_id, params=chunk)
        if new.status != RUNNING:
            self.client.update_run(run_id, status=new.status)
        return run_id

    @property
    def _sql(self) -> SqlWriter | None:
        """The one-transaction writer of an SQL store (tracking/sqlwrite.py); None through a server."""
        if self._writer is False:
            from orchestrator.tracking.sqlwrite import writer_for

            self._writer = writer_for(self.client)
        return self._writer or None

    def _record(
        self, run_id: str, metrics: list[Metric], tags: dict[str, Any], status: str | None = None, ended: bool = False
    ) -> None:
        """Metrics, tags and a status change of one run as one write."""
        self._record_one(self._write(run_id, metrics, tags, status, ended))

    @staticmethod
    def _write(
        run_id: str, metrics: list[Metric], tags: dict[str, Any], status: str | None = None, ended: bool = False
    ) -> RunWrite:
        """The error tag of an earlier attempt is dropped when the run ends FINISHED."""
        drop = (Tag.ERROR,) if ended and status == FINISHED else ()
        return RunWrite(run_id, metrics, {k: str(v)[:5000] for k, v in tags.items()}, status, ended, drop)

    def _record_many(self, writes: list[RunWrite]) -> bool:
        """All the writes in one transaction of the fast writer; False when it cannot (nothing written)."""
        from orchestrator.tracking.sqlwrite import Fallback

        if self._sql is None:
            if not self._batch_route or not self.uri.startswith(("http://", "https://")):
                return False
            from orchestrator.tracking.server_app import post_writes

            done = post_writes(self.client, writes)  # an `orch server`: one request, one transaction for all
            if done is None:  # a server without orch's route: MLflow's API from now on
                self._batch_route = False
            return bool(done)
        try:
            self._sql.record_many(writes)
            return True
        except Fallback:
            return False

    def _record_one(self, write: RunWrite) -> None:
        if not (write.metrics or write.tags or write.status or write.drop_tags) or self._record_many([write]):
            return
        # duplicates of a live push, or a deleted run: the client deduplicates or says why
        from mlflow.entities import RunTag

        tag_list = [RunTag(k, v) for k, v in write.tags.items()]
        for i, chunk in enumerate(chunks(write.metrics, BATCH) if write.metrics else [[]]):
            if chunk or (i == 0 and tag_list):  # tags ride with the first batch: one write, not two
                self._log_batch(write.run_id, chunk, tag_list if i == 0 else [])
        if write.drop_tags:
            self._clear_error(write.run_id)
        if write.ended and write.status is not None:
            self.client.set_terminated(write.run_id, write.status)
        elif write.status is not None:
            self.client.update_run(write.run_id, status=write.status)

    def set_tags(self, run_id: str, tags: dict[str, Any]) -> None:
        self._record(run_id, [], tags)

    def set_status(self, run_id: str, status: str, error: str | None = None) -> None:
        self._record(run_id, [], {Tag.ERROR: error} if error else {}, status, ended=status in TERMINAL)

    def log_values(self, run_id: str, values: dict[str, float], step: int = 0) -> None:
        """Plain values as metrics at ``step``, stamped now (aggregates, report summaries)."""
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        if values:
            self.client.log_batch(run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in values.items()])

    def log_text(self, run_id: str, text: str, name: str) -> None:
        self.client.log_text(run_id, text, name)

    def _log_batch(
        self, run_id: str, metrics: list[Metric], tags: list[RunTag] | None = None, attempts: int = 4
    ) -> None:
        """``log_batch``, retried when two writers (ingestion and a job's live push) inserted the same rows
        at once: MLflow's SQL store drops exact duplicates, but its check races the other's commit."""
        from mlflow.exceptions import MlflowException

        for attempt in range(attempts):
            try:
                self.client.log_batch(run_id, metrics=metrics, tags=tags or [])
                return
            except MlflowException as err:
                if attempt == attempts - 1 or "unique constraint" not in str(err).lower():
                    raise
                time.sleep(0.2 * (attempt + 1))

    def _clear_error(self, run_id: str) -> None:
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # no such tag: the usual case
            self.client.delete_tag(run_id, Tag.ERROR)

    # -- ingestion of journals (tracking/ingest.py) ----------------------------------------------
    def ingest(self, run_dir: RunDir) -> str | None:
        """Bring the journal's new lines into the run's MLflow record (idempotent); the terminal status
        when the journal ended, else None."""
        return ingest.ingest(self, run_dir)

    def ingest_many(self, run_dirs: list[RunDir]) -> list[str | None]:
        """``ingest`` of several runs, in one transaction on an SQL store."""
        return ingest.ingest_many(self, run_dirs)

    def close_dead(self, run_dir: RunDir, reason: str, status: str = KILLED) -> str:
        """A job that ended without journaling its end: what it wrote, then its end, recorded."""
        return ingest.close_dead(self, run_dir, reason, status)
