"""Make the embedded sqlite store fast enough for hundreds of runs.

Every MLflow write is its own transaction, and sqlite's default (rollback journal, synchronous=FULL)
fsyncs each one: ~10 ms a commit here, ~18 commits a run. WAL with synchronous=NORMAL commits without
fsync (durable against a crash of orch, not against power loss of the machine; the run journals on disk
can be re-ingested with `orch sync`). WAL needs shared memory, so it is wrong for a database on NFS read
from several hosts: set ORCH_SQLITE_WAL=0 there, or better use a tracking server (docs/tracking.md)."""

from __future__ import annotations

import os
import sqlite3

_installed = False


def install() -> None:
    global _installed
    if _installed or os.environ.get("ORCH_SQLITE_WAL", "1") == "0":
        return
    _installed = True
    from sqlalchemy import event  # with MLflow's client only: read-only commands import neither
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, connection_record) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()
