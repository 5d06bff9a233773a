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
from typing import Any, IO


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
