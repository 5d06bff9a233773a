"""The run journal: append-only JSON lines written by the job, read by whoever ingests it into MLflow.

One line per event, flushed as written, so a job killed with SIGKILL leaves every line it wrote up to
then readable, and a torn last line is simply not read yet; a line torn for good (a full disk) is
skipped and reported, and the next writer starts on a fresh line after it. Events:
  start {attempt, pid, host, resumed_from_step}   metrics {step, metrics}   checkpoint {step}
  end {status, final, error, traceback}
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from pathlib import Path
from typing import IO, Any

from orchestrator.vocabulary import Event, RunStatus

# How a run ends (the ``end`` event's status): MLflow's terminal run statuses (orchestrator/vocabulary.py)
FINISHED, FAILED, KILLED = RunStatus.FINISHED, RunStatus.FAILED, RunStatus.KILLED


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
        self._file: IO[str] = open(path, "a", buffering=1)  # noqa: SIM115 - held until close()
        self._lock = threading.Lock()  # the workload's thread and the system-metrics sampler both write
        if torn_tail(path):
            # An earlier writer died mid-line (disk full, quota, SIGKILL in a write): start on a fresh line, so
            # the fragment stays one undecodable line that readers skip, not glued to this writer's first one.
            self._file.write("\n")
            self._file.flush()

    def write(self, event: str, **fields: Any) -> None:
        record = {"t": time.time(), "event": event, **fields}
        if "metrics" in record:
            record["metrics"] = {k: _jsonable(float(v)) for k, v in record["metrics"].items()}
        if record.get("final"):
            record["final"] = {k: _jsonable(float(v)) for k, v in record["final"].items()}
        line = json.dumps(record) + "\n"
        with self._lock:  # one whole line at a time
            self._file.write(line)
            self._file.flush()

    def sync(self) -> None:
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()


def torn_tail(path: Path) -> bool:
    """The file is non-empty and does not end with a newline."""
    try:
        with open(path, "rb") as f:
            if f.seek(0, os.SEEK_END) == 0:
                return False
            f.seek(-1, os.SEEK_END)
            return f.read(1) != b"\n"
    except OSError:
        return False


def read_journal(
    path: Path, offset: int = 0, skipped: list[tuple[int, bytes]] | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Complete lines from byte ``offset``; returns the records and the offset after the last one.
    A complete line that is not a JSON object (the fragment a full disk left, then a newline) is skipped;
    its byte offset and text are appended to ``skipped`` when given, so the caller can say so."""
    if not path.exists():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    records = []
    at = offset
    for line in data[:end].split(b"\n"):
        if line.strip():
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if isinstance(record, dict) and "event" in record and "t" in record:
                records.append(record)
            elif skipped is not None:
                skipped.append((at, line))
        at += len(line) + 1
    return records, offset + end


def events(path: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The journal's complete records, or only those of one event kind ("start", "end", ...)."""
    records = read_journal(path)[0]
    return records if kind is None else [r for r in records if r["event"] == kind]


def last_event(path: Path, kind: str) -> dict[str, Any] | None:
    """The latest record of one event kind (a requeued or resumed run journals several starts)."""
    found = events(path, kind)
    return found[-1] if found else None


def last_record(path: Path) -> dict[str, Any] | None:
    """The journal's latest record, of any kind."""
    found = events(path)
    return found[-1] if found else None


def ended_last(path: Path) -> bool:
    """The latest record is an ``end``: the run is over (until a resubmission starts another attempt)."""
    last = last_record(path)
    return last is not None and last["event"] == Event.END


def running_now(path: Path) -> bool:
    """A worker is running now: it started and has not ended or handed over to a requeue (a requeued job
    waiting in the queue has no worker to journal an end)."""
    last = last_record(path)
    return last is not None and last["event"] not in (Event.END, Event.REQUEUE)


TAIL_BYTES = 1 << 16  # what a tail read takes: enough recent lines, whatever the journal's size


def tail_records(path: Path, max_bytes: int = TAIL_BYTES) -> list[dict[str, Any]]:
    """The complete records of the journal's last ``max_bytes`` (a cut first line and a line being written
    are left out); [] without a journal."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max_bytes))
            lines = f.read().splitlines()
    except OSError:
        return []
    records = []
    for line in lines[1:] if len(lines) > 1 and size > max_bytes else lines:  # the first may be cut
        try:
            records.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return records


def has_started(path: Path) -> bool:
    """Some worker journaled a ``start`` here. A journal can exist without one: the ``end`` that Ctrl-C or
    ``orch cancel`` writes for a run that was still queued; such a run never ran."""
    try:
        with open(path, "rb") as f:
            return any(b'"event": "start"' in line for line in f)
    except OSError:
        return False
