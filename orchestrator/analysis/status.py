"""Per-group summary of an experiment: finished / running / failed / missing, and the main metric; and per
sweep (`orch tune`) its trials: finished / running / stopped early / failed, and the best score."""

from __future__ import annotations

import math
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.job import stall
from orchestrator.job.rundir import RunDir
from orchestrator.spec.identity import drift, read_defaults_tag
from orchestrator.tracking import notify
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.records import (
    FAILED,
    FINISHED,
    KILLED,
    RUNNING,
    SCHEDULED,
    Role,
    RunRecord,
    Tag,
    latest_per_key,
)


@dataclass
class GroupStatus:
    group: str
    label: str
    variant: str
    finished: int
    running: int
    pending: int
    failed: int
    killed: int  # cancelled, interrupted or lost with their node: not the run's own failure
    missing: int
    metric: str
    mode: str
    metric_mean: float | None
    metric_values: list[float]
    run_id: str
    # finished seeds recorded under a default other than the latest submission's (spec/identity.py): how
    # many, and param path -> [the default they ran with, the default now]
    drifted: int = 0
    drift: dict[str, list] = field(default_factory=dict)
    # what the group's runs cost, every attempt counted (job/sysmetrics.py's totals): see ``costs``
    costs: dict[str, float] = field(default_factory=dict)
    # running runs whose workload has been silent past their threshold (job/stall.py): run id, seed, times
    stalled: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def default_drift(parent: RunRecord, seeds: list[RunRecord]) -> tuple[int, dict[str, list]]:
    """Which finished seeds ran under another default than the group's latest submission, and how."""
    current = read_defaults_tag(parent.tags.get(Tag.DEFAULTS))
    if current is None:
        return 0, {}
    count, changes = 0, {}
    for seed in seeds:
        found = drift(read_defaults_tag(seed.tags.get(Tag.DEFAULTS)) or {}, current) if seed.status == FINISHED else {}
        count += bool(found)
        changes.update({path: list(pair) for path, pair in found.items()})
    return count, changes


def stalls(running: list[RunRecord], now: float | None = None) -> list[dict[str, Any]]:
    """The running runs whose journal shows no sign of life from the workload past their threshold."""
    out = []
    for record in running:
        run_dir = RunDir(Path(record.tags.get(Tag.RUN_DIR, "")))
        try:
            configured = run_dir.load().stall_after_s
        except (OSError, ValueError):
            continue
        found = stall.check(run_dir.journal, configured, now)
        if found is not None:
            out.append({"run_id": record.run_id, "seed": record.tags.get(Tag.SEED, "?"), **found.to_dict()})
            notify.run_stalled(run_dir, found.to_dict(), int(record.tags.get(Tag.ATTEMPT, 1)))
    return out


def costs(attempts: list[RunRecord]) -> dict[str, float]:
    """Wall, CPU and GPU hours (GPUs held) summed over the attempts that recorded their totals, and the
    largest peak memory among them: where an allocation went, failed and requeued attempts included."""
    ended = [r for r in attempts if "system/wall_s" in r.metrics]

    def total(name: str) -> float:
        return sum(r.metrics.get(f"system/{name}", 0.0) for r in ended) / 3600

    return {
        "runs": len(ended),
        "wall_h": total("wall_s"),
        "cpu_h": total("cpu_s"),
        "gpu_h": total("gpu_s"),
        "peak_rss_mb": max((r.metrics.get("system/peak_rss_mb", 0.0) for r in ended), default=0.0),
        "peak_gpu_mem_mb": max((r.metrics.get("system/peak_gpu_mem_mb", 0.0) for r in ended), default=0.0),
    }


def experiment_status(
    ledger: Ledger, experiment_id: str, records: list[RunRecord] | None = None, parents: list[RunRecord] | None = None
) -> list[GroupStatus]:
    """Pass the seed and group records when the caller already searched MLflow (a search of 500 runs
    costs about a second on sqlite: do it once per command)."""
    records = ledger.runs(experiment_id) if records is None else records
    parents = ledger.runs(experiment_id, role=Role.GROUP) if parents is None else parents
    per_group: dict[str, list] = {}
    for best in latest_per_key(records):
        per_group.setdefault(best.tags.get(Tag.GROUP, ""), []).append(best)
    attempts: dict[str, list] = {}
    for record in records:
        attempts.setdefault(record.tags.get(Tag.GROUP, ""), []).append(record)
    out = []
    for parent in sorted(parents, key=lambda r: r.start_time or 0):
        group = parent.tags.get(Tag.GROUP, "")
        recs = per_group.get(group, [])
        metric = parent.tags.get(Tag.METRIC, "")
        statuses = Counter(r.status for r in recs)
        values = [
            r.metrics[metric]
            for r in recs
            if r.status == FINISHED and metric in r.metrics and not math.isnan(r.metrics[metric])
        ]
        requested = int(parent.tags.get(Tag.SEEDS_REQUESTED, 0))
        drifted, changes = default_drift(parent, recs)
        out.append(
            GroupStatus(
                group=group,
                label=parent.tags.get("mlflow.runName", group),
                variant=parent.tags.get(Tag.VARIANT, ""),
                finished=statuses[FINISHED],
                running=statuses[RUNNING],
                pending=statuses[SCHEDULED],
                failed=statuses[FAILED],
                killed=statuses[KILLED],
                missing=max(0, requested - len(recs)),
                metric=metric,
                mode=parent.tags.get(Tag.MODE, "min"),
                metric_mean=statistics.fmean(values) if values else None,
                metric_values=values,
                run_id=parent.run_id,
                drifted=drifted,
                drift=changes,
                costs=costs(attempts.get(group, [])),
                stalled=stalls([r for r in recs if r.status == RUNNING]),
            )
        )
    return out


@dataclass
class SweepStatus:
    sweep: str
    status: str
    finished: int
    running: int
    stopped_early: int
    failed: int
    metric: str
    mode: str
    best_score: float | None
    best_trial: str
    run_id: str
    importance: dict[str, dict[str, float]] = field(default_factory=dict)  # evaluator -> param (tune/analytics.py)

    def to_dict(self) -> dict:
        return asdict(self)


def _importance(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """A sweep parent's ``importance/<evaluator>/<param>`` metrics (tune/analytics.py), nested."""
    out: dict[str, dict[str, float]] = {}
    for name, value in metrics.items():
        parts = name.split("/", 2)
        if len(parts) == 3 and parts[0] == "importance":
            out.setdefault(parts[1], {})[parts[2]] = value
    return out


def sweep_status(ledger: Ledger, experiment_id: str) -> list[SweepStatus]:
    """The experiment's Tune sweeps (role ``sweep``) and their trials (role ``trial``), oldest sweep first.
    A trial's score is its ``score`` metric (the mean final metric over its seeds, orchestrator/tune/trial.py)."""
    trials: dict[str, list[RunRecord]] = {}
    for trial in ledger.runs(experiment_id, role=Role.TRIAL):
        trials.setdefault(trial.tags.get(Tag.SWEEP, ""), []).append(trial)
    out = []
    for sweep in sorted(ledger.runs(experiment_id, role=Role.SWEEP), key=lambda r: r.start_time or 0):
        name = sweep.tags.get(Tag.SWEEP, "")
        mine = trials.get(name, [])
        early = [t for t in mine if t.status == KILLED and t.tags.get(Tag.EARLY_STOPPED) == "true"]
        scored = [
            (t.metrics["score"], t.tags.get(Tag.TRIAL_ID, ""))
            for t in mine
            if t.status == FINISHED and not math.isnan(t.metrics.get("score", math.nan))
        ]
        mode = sweep.tags.get(Tag.MODE, "min")
        best = (min if mode == "min" else max)(scored) if scored else (None, "")
        out.append(
            SweepStatus(
                sweep=name,
                status=sweep.status,
                finished=sum(t.status == FINISHED for t in mine),
                running=sum(t.status in (RUNNING, SCHEDULED) for t in mine),
                stopped_early=len(early),
                failed=sum(t.status in (FAILED, KILLED) for t in mine) - len(early),
                metric=sweep.tags.get(Tag.METRIC, ""),
                mode=mode,
                best_score=best[0],
                best_trial=best[1],
                run_id=sweep.run_id,
                importance=_importance(sweep.metrics),
            )
        )
    return out
