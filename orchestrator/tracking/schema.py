"""MLflow's schema check, paid once per MLflow installation instead of once per command.

Opening an SQL store, MLflow compares the database's schema revision with the newest revision of its own
migration scripts, which it finds by loading all of them with alembic: ~0.6 s of every command that writes
to the store, for a value that only changes when MLflow does. It is cached (orchestrator/cache.py) by
MLflow's version and install path; the comparison itself still runs on every open, so a database of
another MLflow version is still refused with MLflow's own message."""

from __future__ import annotations

from pathlib import Path

from orchestrator.cache import cached

_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    _installed = True
    import mlflow
    from mlflow.store.db import utils

    compute = utils._get_latest_schema_revision
    key = f"{mlflow.__version__}\0{Path(utils.__file__).resolve()}"
    utils._get_latest_schema_revision = lambda: cached("mlflow-schema-head", key, compute)
