"""The run journal: append-only JSON lines written by the job, read by whoever ingests it into MLflow.

One line per event, flushed as written, so a job killed with SIGKILL leaves every line it wrote up to
then readable, and a torn last line is simply not read yet. Events:
  start {attempt, pid, host, resumed_from_step}   metrics {step, metrics}   checkpoint {step}
  end {status, final, error, traceback}
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import IO, Any

# How a run ends (the ``end`` event's status): MLflow's terminal run statuses, by the same names.
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


def _jsonable(value: Any) -> Any:
    # JSON has no NaN/inf; keep them as strings so a diverged metric is recorded, not lost.
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return value


def decode_number(value: Any) -> float:
    return float(value) if isinstance(value, str) else value


class JournalWriter:
    def __init__(self, path: Path):
        self.path = path
        self._file: IO[str] = open(path, "a", buffering=1)

    def write(self, event: str, **fields: Any) -> None:
        record = {"t": time.time(), "event": event, **fields}
        if "metrics" in record:
            record["metrics"] = {k: _jsonable(float(v)) for k, v in record["metrics"].items()}
        if "final" in record and record["final"]:
            record["final"] = {k: _jsonable(float(v)) for k, v in record["final"].items()}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def read_journal(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Complete lines from byte ``offset``; returns the records and the offset after the last one."""
    if not path.exists():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    records = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return records, offset + end


def events(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The journal's complete records, or only those of one event kind ("start", "end", ...)."""
    records = read_journal(path)[0]
    return records if kind is None else [r for r in records if r["event"] == kind]


def last_event(path: Path, kind: str) -> dict[str, Any] | None:
    """The latest record of one event kind (a requeued or resumed run journals several starts)."""
    found = events(path, kind)
    return found[-1] if found else None


def last_metrics(path: Path, max_bytes: int = 1 << 16) -> dict[str, Any] | None:
    """The latest ``metrics`` record, reading only the journal's tail (live progress reads it every second,
    whatever the journal's size); None when the tail holds none."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            lines = f.read().splitlines()
    except OSError:
        return None
    for line in reversed(lines[1:] if len(lines) > 1 and size > max_bytes else lines):  # the first may be cut
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line being written
        if record.get("event") == "metrics":
            return record
    return None
