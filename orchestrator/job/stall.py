"""Is a running run stalled? Its journal says when the workload last showed a sign of life: a ``start``,
``device``, ``metrics``, ``checkpoint`` or ``warning`` line. The system-metrics sampler's lines do not count:
they come from orch's own thread, which goes on sampling a workload stuck in a deadlock or a blocking read
(and show it idle, which helps to tell why).

A run is stalled when that last sign is older than its threshold: the spec's ``tracking.stall_after_s``, else
ten times the workload's usual gap between two metrics lines, and never under five minutes (a run that logs
once an hour is not stalled after ten minutes; one that logs every second is, after five)."""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.job.journal import events, tail_records
from orchestrator.vocabulary import Event

MIN_THRESHOLD_S = 300.0
RATE_FACTOR = 10.0
SIGNS_OF_LIFE = (Event.START, Event.DEVICE, Event.METRICS, Event.CHECKPOINT, Event.WARNING)


@dataclass(frozen=True)
class Stall:
    last_sign: float  # Unix time of the workload's last journal line
    silent_s: float  # seconds since
    threshold_s: float

    def to_dict(self) -> dict[str, float]:
        return {"last_sign_of_life": self.last_sign, "silent_s": self.silent_s, "threshold_s": self.threshold_s}


def threshold(records: list[dict], configured: float | None) -> float:
    """The spec's threshold, else ten times the median gap between the tail's metrics lines (5 min at least)."""
    if configured:
        return configured
    times = [r["t"] for r in records if r.get("event") == Event.METRICS]
    gaps = [b - a for a, b in itertools.pairwise(times) if b > a]
    usual = statistics.median(gaps) if gaps else 0.0
    return max(MIN_THRESHOLD_S, RATE_FACTOR * usual)


def check(
    journal: Path, configured_s: float | None = None, now: float | None = None, tail: list[dict] | None = None
) -> Stall | None:
    """The stall of the run whose journal this is, or None: not stalled, not started, or over. ``tail``: the
    journal's tail when the caller read it already (``journal.tail_records``)."""
    records = tail_records(journal) if tail is None else tail
    if not records or records[-1].get("event") in (Event.END, Event.REQUEUE):
        return None
    signs = [r["t"] for r in records if r.get("event") in SIGNS_OF_LIFE]
    if not signs:  # a tail of system samples only: the workload has been silent for long; look further back
        records = events(journal)
        signs = [r["t"] for r in records if r.get("event") in SIGNS_OF_LIFE]
    if not signs:
        return None
    last = max(signs)
    silent = (time.time() if now is None else now) - last
    limit = threshold(records, configured_s)
    return Stall(last, silent, limit) if silent > limit else None
