"""Following a submission's jobs to their end: poll the backend, ingest the journals (live every few seconds,
fully at the end), report each running run's step and rate to a progress sink; Ctrl-C cancels, and the
cancelled runs end KILLED, recorded."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from orchestrator.backends.base import DONE, LOST, Backend, Job
from orchestrator.backends.base import RUNNING as JOB_RUNNING
from orchestrator.driver import Prepared
from orchestrator.eta import Eta
from orchestrator.job import stall
from orchestrator.job.journal import decode_number, last_event, tail_records
from orchestrator.job.rundir import RunDir
from orchestrator.job.stall import Stall
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.records import FINISHED, KILLED
from orchestrator.vocabulary import Event

LIVE_INGEST_EVERY_S = 2.0
PROGRESS_EVERY_S = 1.0  # running runs' steps read from their journals' tails


@dataclass
class RunProgress:
    """Where a running run stands, from the tail of its journal."""

    label: str
    step: int | None  # the last logged step (None: nothing logged yet)
    metrics: dict[str, float]  # the values logged at that step
    rate: float | None  # steps per second since the run started
    stall: Stall | None = None  # its workload silent past the run's threshold (job/stall.py)


class ProgressSink(Protocol):
    """What ``follow`` reports to (the CLI draws a progress bar and a table of running runs; tests and
    notebooks may pass nothing). ``active`` is refreshed about once a second."""

    def update(
        self,
        done: int,
        running: int,
        failed: int,
        killed: int,
        total: int,
        active: list[RunProgress],
        eta_s: float | None = None,
    ) -> None: ...


class _Silent:
    def update(self, *progress: Any, **more: Any) -> None:  # any ProgressSink call: nothing to show
        pass


def run_progress(label: str, run_dir: RunDir, started_at: dict[str, Any]) -> RunProgress:
    """``started_at`` caches, per run directory, its start time (its journal's start event) and its stall
    threshold (its run.json), each read once; the journal's tail is read once per call."""
    where = str(run_dir.path)
    if where not in started_at:
        start = last_event(run_dir.journal, Event.START)
        if start is None:
            return RunProgress(label, None, {}, None)
        try:
            threshold = run_dir.load().stall_after_s
        except (OSError, ValueError):
            threshold = None
        started_at[where] = (start["t"], threshold)
    started, threshold = started_at[where]
    tail = tail_records(run_dir.journal)
    stalled = stall.check(run_dir.journal, threshold, tail=tail)
    record = next((r for r in reversed(tail) if r.get("event") == Event.METRICS), None)
    if record is None:
        return RunProgress(label, None, {}, None, stalled)
    elapsed = record["t"] - started
    rate = (record["step"] + 1) / elapsed if elapsed > 0 else None
    metrics = {k: decode_number(v) for k, v in record["metrics"].items()}
    return RunProgress(label, record["step"], metrics, rate, stalled)


def follow(
    ledger: Ledger, backend: Backend, prepared: list[Prepared], sink: ProgressSink | None = None, poll_s: float = 0.05
) -> dict[str, str]:
    """Poll until every job ended, ingesting journals (live every few seconds, fully at the end).
    Ctrl-C cancels: running jobs end KILLED, their journals ingested, nothing half-written."""
    sink = sink or _Silent()
    jobs = {p.run_id: Job(p.job_id, p.run_dir) for p in prepared}
    by_id = {p.run_id: p for p in prepared}
    results: dict[str, str] = {}
    last_live = -LIVE_INGEST_EVERY_S  # at once: runs may have started before their records existed (api.launch)
    last_shown = time.monotonic()
    started_at: dict[str, Any] = {}
    active: list[RunProgress] = []
    eta = Eta()
    try:
        while len(results) < len(jobs):
            pending_ids = [rid for rid in jobs if rid not in results]
            states = backend.poll([jobs[rid] for rid in pending_ids])
            running, ended = [], []
            for run_id, state in zip(pending_ids, states, strict=False):
                if state.state in (DONE, LOST):
                    ended.append((run_id, state.reason))
                elif state.state == JOB_RUNNING:
                    running.append(run_id)
            now = time.monotonic()
            eta.running({r: by_id[r].run.label for r in running}, now)
            if ended:  # the runs that ended since the last poll: one write (Ledger.ingest_many)
                for (run_id, reason), status in zip(
                    ended, ledger.ingest_many([jobs[r].run_dir for r, _ in ended]), strict=False
                ):
                    results[run_id] = status or ledger.close_dead(
                        jobs[run_id].run_dir, reason or "the job ended without recording an end"
                    )
                    eta.ended(run_id, results[run_id] == FINISHED, now)
            if time.monotonic() - last_live > LIVE_INGEST_EVERY_S:
                ledger.ingest_many([jobs[run_id].run_dir for run_id in running])
                last_live = time.monotonic()
            if time.monotonic() - last_shown > PROGRESS_EVERY_S:
                active = [
                    run_progress(f"{by_id[r].run.label}/seed{by_id[r].run.seed}", by_id[r].run_dir, started_at)
                    for r in running
                ]
                last_shown = time.monotonic()
            killed = sum(1 for s in results.values() if s == KILLED)  # cancelled or interrupted: not a failure
            failed = sum(1 for s in results.values() if s not in (FINISHED, KILLED))
            queued = [by_id[r].run.label for r in jobs if r not in results and r not in running]
            left = eta.seconds(running, queued, now)
            sink.update(len(results), len(running), failed, killed, len(jobs), active, eta_s=left)
            if len(results) < len(jobs):
                backend.wait(poll_s)  # local: woken at once by a run's end
    except KeyboardInterrupt:
        if not backend.blocking:  # queued on a cluster (slurm): Ctrl-C stops following, the jobs go on
            raise
        remaining = [rid for rid in jobs if rid not in results]
        backend.cancel([jobs[rid] for rid in remaining])
        for run_id in remaining:
            results[run_id] = ledger.close_dead(jobs[run_id].run_dir, "cancelled (Ctrl-C)")
        raise
    return results
