"""Live metrics from inside a job, through an MLflow tracking server (``tracking.uri: http(s)://...``).

The journal stays the source of truth: a background thread tails it and pushes its metric records to the
server in batches (MLflow's REST ``runs/log-batch``), so a run's curves show up while it runs. It sends
exactly the rows ingestion would send (key, value, journal timestamp in ms, step; steps replayed after a
resume skipped by the same rule), and records how far it got in ``live.json``; ``Ledger.ingest`` skips
those lines and sends the rest. A row sent twice (a race with ingestion, a retry after a lost reply) is
an exact duplicate, which MLflow's SQL store drops (primary key over all its columns).

It never blocks the workload: ``notify`` (a RunContext.on_log callback) only counts; reading, batching
and HTTP happen in the thread. Memory is bounded by reading at most ``MAX_READ`` journal bytes and
sending at most ``MAX_BATCH`` rows at a time. When the server is unreachable it backs off and retries,
and the job goes on journal-only: whatever is not acknowledged is ingested later (``orch sync``).

Plain HTTP rather than ``MlflowClient``: importing mlflow costs a job about a second (docs/architecture.md), and its
REST client retries up to 7 times with exponential back-off, which would hold a job's exit for minutes
when the server is down. Here a request has a short timeout and the back-off is ours."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from orchestrator.job.journal import decode_number
from orchestrator.job.rundir import RunDir, atomic_write
from orchestrator.job.runjson import RunJob
from orchestrator.vocabulary import Event

LIVE_FILE = "live.json"
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch request
MAX_READ = 1 << 20  # journal bytes read per round: bounds the thread's memory
FLUSH_EVERY_S = 1.0  # a curve is at most this stale on the server while the server is up
CONNECT_TIMEOUT_S, READ_TIMEOUT_S = 3.0, 60.0
MAX_BACKOFF_S = 30.0
MAX_PACE_S = 10.0
CLOSE_BUDGET_S = 15.0  # at exit, wait at most this long for the last push (the journal has it anyway)


def is_http(uri: str | None) -> bool:
    return uri is not None and uri.startswith(("http://", "https://"))


def live_file(run_dir: RunDir) -> Path:
    return run_dir.path / LIVE_FILE


def read_state(run_dir: RunDir, run_id: str) -> dict[str, Any] | None:
    path = live_file(run_dir)
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if state.get("run_id") == run_id else None


def _rest_value(value: Any) -> float | str:
    # MLflow's REST API is protobuf JSON: non-finite doubles travel as these strings.
    value = decode_number(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


class LivePusher:
    def __init__(self, run_dir: RunDir, run_id: str, uri: str, flush_every_s: float = FLUSH_EVERY_S):
        self.run_dir, self.run_id = run_dir, run_id
        self.endpoint = uri.rstrip("/") + "/api/2.0/mlflow/runs/log-batch"
        self.flush_every_s = flush_every_s
        state = self._initial_state()
        self.offset: int = state["offset"]
        self.max_step: dict[str, int] = dict(state["max_step"])
        self.pushed = 0  # rows acknowledged by the server in this process
        self.failures = 0  # consecutive failed requests
        self.last_error: str | None = None
        self._pending = 0  # rows logged since the last push (a hint, not a count of record)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._requested = self._done = 0
        self._session: Any = None  # a requests.Session, made on the first push
        # Seconds between pushes: at least flush_every_s, and several times the last request's duration,
        # so a loaded server gets fewer, fuller batches instead of a growing queue of small ones.
        self._pace = flush_every_s
        self._failed_at = 0.0
        self._thread = threading.Thread(target=self._loop, name="orch-live", daemon=True)

    def _initial_state(self) -> dict[str, Any]:
        """Start where the most advanced of the live cursor and the ingestion cursor stands: both are
        prefixes of the journal already in MLflow, with the ``max_step`` that prefix implies."""
        candidates = [{"offset": 0, "max_step": {}}]
        live = read_state(self.run_dir, self.run_id)
        if live:
            candidates.append(live)
        ingested = self.run_dir.read_cursor()
        if ingested.get("run_id") == self.run_id:
            candidates.append(ingested)
        return max(candidates, key=lambda c: c["offset"])

    # -- the job's side: never blocks --------------------------------------------------------------
    def start(self) -> LivePusher:
        self._thread.start()
        return self

    def notify(self, step: int, metrics: dict[str, float]) -> None:
        self._pending += len(metrics)
        if self._pending >= MAX_BATCH:
            self._wake.set()

    def flush(self, timeout: float) -> bool:
        """Ask the thread to push everything journaled so far; wait at most ``timeout`` seconds.
        True when it was all acknowledged."""
        with self._cond:
            self._requested += 1
            target = self._requested
            self._wake.set()
            self._cond.wait_for(lambda: self._done >= target or not self._thread.is_alive(), timeout)
        return self.caught_up()

    def close(self, timeout: float = CLOSE_BUDGET_S) -> bool:
        """Final push (the journal is complete by now), then stop the thread."""
        ok = self.flush(timeout) if self._thread.is_alive() else self.caught_up()
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=1.0)
        if self._session is not None:
            self._session.close()
        return ok

    def caught_up(self) -> bool:
        try:
            return self.offset >= self.run_dir.journal.stat().st_size
        except OSError:
            return True

    # -- the thread ------------------------------------------------------------------------------
    def _loop(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            self._wake.wait(backoff or self._pace)
            self._wake.clear()
            with self._cond:
                requested = self._requested
            if self._stop.is_set():
                break
            if backoff and requested == self._done and not self._due(backoff):
                continue  # in back-off and nobody asked for a flush
            self._pending = 0
            began = time.monotonic()
            try:
                self._push_available()
                self._pace = max(self.flush_every_s, min(MAX_PACE_S, 4 * (time.monotonic() - began)))
                backoff, self.failures, self.last_error = 0.0, 0, None
            except Exception as err:
                self.failures += 1
                self.last_error = f"{type(err).__name__}: {err}"
                backoff = min(MAX_BACKOFF_S, 0.5 * 2**self.failures)
                self._failed_at = time.monotonic()
            with self._cond:
                self._done = requested
                self._cond.notify_all()

    def _due(self, backoff: float) -> bool:
        return time.monotonic() - self._failed_at >= backoff

    def _push_available(self) -> None:
        while True:
            rows, offset, max_step = self._next_batch()
            if offset == self.offset:
                return
            if rows:
                self._send(rows)
                self.pushed += len(rows)
            self.offset, self.max_step = offset, max_step
            atomic_write(
                live_file(self.run_dir),
                json.dumps({"run_id": self.run_id, "offset": offset, "max_step": max_step}).encode(),
            )

    def _next_batch(self) -> tuple[list[dict[str, Any]], int, dict[str, int]]:
        """Rows of the complete journal lines after ``self.offset``, up to MAX_BATCH rows (a record is
        never split unless it alone has more), and the offset and max_step after them."""
        try:
            with open(self.run_dir.journal, "rb") as f:
                f.seek(self.offset)
                data = f.read(MAX_READ)
                while data and b"\n" not in data:  # one line longer than MAX_READ: read it whole
                    more = f.read(MAX_READ)
                    if not more:
                        break
                    data += more
        except FileNotFoundError:
            return [], self.offset, self.max_step
        rows: list[dict[str, Any]] = []
        offset, max_step = self.offset, dict(self.max_step)
        position = 0
        while True:
            end = data.find(b"\n", position)
            if end < 0:
                break
            line = data[position:end]
            record = json.loads(line) if line.strip() else {}
            if record.get("event") == Event.METRICS:
                new = [(k, v) for k, v in record["metrics"].items() if record["step"] > max_step.get(k, -1)]
                if rows and len(rows) + len(new) > MAX_BATCH:
                    break
                ms = int(record["t"] * 1000)  # the same expression as Ledger.ingest: identical rows
                for name, value in new:
                    max_step[name] = record["step"]
                    rows.append({"key": name, "value": _rest_value(value), "timestamp": ms, "step": record["step"]})
            position = end + 1
            offset = self.offset + position
        return rows, offset, max_step

    def _send(self, rows: list[dict[str, Any]]) -> None:
        import requests  # only jobs that track through a server pay for it

        if self._session is None:
            self._session = requests.Session()
            user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
            if user and password:  # an authenticated `orch server` (tracking/auth.py): the job's own credentials
                self._session.auth = (user, password)
        for i in range(0, len(rows), MAX_BATCH):
            response = self._session.post(
                self.endpoint,
                json={"run_id": self.run_id, "metrics": rows[i : i + MAX_BATCH]},
                timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
            )
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")


def start(run_dir: RunDir, job: RunJob) -> LivePusher | None:
    """A started pusher when the run tracks through a server (and ORCH_LIVE is not 0), else None."""
    if not is_http(job.tracking_uri) or os.environ.get("ORCH_LIVE", "1") == "0":
        return None
    return LivePusher(run_dir, job.run_id, job.tracking_uri).start()


def flush_on_signal(pusher: LivePusher, signum: int = signal.SIGUSR2, timeout: float = 5.0):
    """Flush before the signal's previous handler runs (submitit checkpoints and requeues on SIGUSR2).
    Main thread only. Returns a function that puts the previous handler back."""
    previous = signal.getsignal(signum)

    def handler(sig: int, frame: Any) -> None:
        pusher.flush(timeout)
        if callable(previous):
            previous(sig, frame)
        elif previous == signal.SIG_DFL:  # keep the default outcome (the process ends), after the flush
            signal.signal(sig, signal.SIG_DFL)
            os.kill(os.getpid(), sig)

    signal.signal(signum, handler)

    def restore() -> None:
        if signal.getsignal(signum) is handler and previous is not None:
            signal.signal(signum, previous)

    return restore
