"""orch's use cases on experiments already submitted: their status, runs, logs and comparison; cancelling,
syncing, reproducing, listing and deleting. Like ``api`` (which re-exports them), nothing here prints."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import driver, groups
from orchestrator.backends.base import Job
from orchestrator.backends.base import make as make_backend
from orchestrator.errors import InputError
from orchestrator.job.rundir import RunDir
from orchestrator.spec.spec import load_yaml
from orchestrator.spec.tracking_uri import sqlite_path
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.lock import submit_lock
from orchestrator.tracking.records import ACTIVE, FINISHED, Role, RunRecord, Tag
from orchestrator.tracking.uri import resolve_uri

if TYPE_CHECKING:  # the analysis modules are imported where they are used
    import pandas

    from orchestrator.analysis.compare import Report
    from orchestrator.analysis.status import GroupStatus, SweepStatus
    from orchestrator.analysis.study import Study
    from orchestrator.reproduce import Reproduction


# -- reading an experiment ---------------------------------------------------------------------------
def experiment_name(name_or_spec: str) -> tuple[str, str | None]:
    """An experiment name, or a spec path (its ``name`` and ``tracking.uri``)."""
    path = Path(name_or_spec)
    if path.suffix in (".yaml", ".yml"):
        doc = load_yaml(path)
        if "name" not in doc:
            raise InputError("the spec has no 'name'", str(path), "name")
        return str(doc["name"]), (doc.get("tracking") or {}).get("uri")
    return name_or_spec, None


def open_experiment(name_or_spec: str, tracking_uri: str | None = None) -> tuple[Ledger, str, str]:
    """The store (never created by a read), the experiment's id and its name; an unknown one is an error."""
    name, spec_uri = experiment_name(name_or_spec)
    ledger = Ledger(resolve_uri(tracking_uri, spec_uri), create=False)
    experiment_id = ledger.experiment_id(name)
    if experiment_id is None:
        raise InputError(f"no experiment named '{name}' in {ledger.uri}")
    return ledger, experiment_id, name


@dataclass
class ExperimentStatus:
    name: str
    groups: list[GroupStatus]
    sweeps: list[SweepStatus]
    records: list[RunRecord]

    def to_dict(self) -> dict[str, Any]:
        return {
            "experiment": self.name,
            "groups": [g.to_dict() for g in self.groups],
            "sweeps": [s.to_dict() for s in self.sweeps],
        }


def status(experiment: str, tracking_uri: str | None = None, where: str | None = None) -> ExperimentStatus:
    """Runs brought up to date (journals ingested, dead jobs closed), then counted per group and per sweep;
    with ``where`` (``params.noise > 0.1 and variant = low``), only the matching groups and their runs."""
    from orchestrator.analysis.status import experiment_status, sweep_status

    ledger, experiment_id, name = open_experiment(experiment, tracking_uri)
    records = driver.refresh(ledger, ledger.runs(experiment_id), make_backend)
    groups.notify_end(ledger, experiment_id, records)
    driver.record_accounting(ledger, records, make_backend)
    parents = groups.update_groups(ledger, experiment_id, records)
    if where:
        from orchestrator.analysis.grouping import group_parents

        kept = {p.data.tags.get(Tag.GROUP) for p in group_parents(ledger, experiment_id, where)}
        parents = [p for p in parents if p.tags.get(Tag.GROUP) in kept]
        records = [r for r in records if r.tags.get(Tag.GROUP) in kept]
    return ExperimentStatus(
        name,
        experiment_status(ledger, experiment_id, records, parents),
        [] if where else sweep_status(ledger, experiment_id),
        records,
    )


def find_run(ledger: Ledger, run: str) -> RunRecord:
    """A run by MLflow run id, by orch key (as printed by --dry-run and status) or by scheduler job id."""
    if not re.fullmatch(r"[\w.:\-]{1,200}", run):  # it goes into an MLflow filter string: nothing that could quote
        raise InputError(f"{run!r} is not a run id, key or job id (letters, digits, '_', '.', ':', '-')", "RUN")
    found = ledger.find(run)
    if found is None:
        raise InputError(f"no run with id or key '{run}' in {ledger.uri}")
    return found


def run_logs(run: str, tracking_uri: str | None = None) -> tuple[RunRecord, RunDir, list[Path]]:
    """A run's record, its run directory and its log files: stdout, stderr, then the scheduler's own."""
    ledger = Ledger(resolve_uri(tracking_uri), create=False)
    record = find_run(ledger, run)
    if not record.tags.get(Tag.RUN_DIR):  # a group, a sweep or a comparison: no process, no logs of its own
        role = record.tags.get(Tag.ROLE, "run")
        experiment_id = ledger.client.get_run(record.run_id).info.experiment_id
        seeds = (
            [r for r in ledger.runs(experiment_id) if r.tags.get(Tag.GROUP) == record.tags.get(Tag.GROUP)]
            if role == Role.GROUP
            else []
        )
        listed = ", ".join(f"{r.run_id} (seed {r.tags.get(Tag.SEED, '?')}, {r.status})" for r in seeds[:10])
        raise InputError(
            f"{run} is a {role} run, with no logs of its own"
            + (
                f"; its seeds: {listed}: orch logs SEED_RUN_ID"
                if listed
                else "; orch status EXPERIMENT --runs lists the seed runs"
            ),
            "RUN",
        )
    run_dir = RunDir(Path(record.tags[Tag.RUN_DIR]))
    try:  # Slurm: what happened before and after Python ran
        scheduler = [Path(p) for p in json.loads(run_dir.scheduler_record.read_text()).get("logs", [])]
    except (OSError, ValueError):
        scheduler = []
    return record, run_dir, [run_dir.stdout, run_dir.stderr, *run_dir.rank_logs(), *scheduler]


def runs(experiment: str, tracking_uri: str | None = None) -> pandas.DataFrame:
    """One row per seed run that counts (the attempt that stands for its key, as status and compare count
    them): run_id, key, group, variant, seed, status, ``params.*`` (typed) and ``metrics.*`` (latest)."""
    from orchestrator.analysis.table import runs_frame

    ledger, experiment_id, _ = open_experiment(experiment, tracking_uri)
    return runs_frame(ledger, experiment_id, driver.refresh(ledger, ledger.runs(experiment_id), make_backend))


def reproduce(run: str, tracking_uri: str | None = None) -> Reproduction:
    """Run a recorded run again from its code snapshot and resolved params (nothing recorded) and compare
    every metric with the record (``Reproduction.identical``)."""
    from orchestrator.reproduce import reproduce as rerun

    ledger = Ledger(resolve_uri(tracking_uri), create=False)
    return rerun(find_run(ledger, run))


# -- acting on runs ----------------------------------------------------------------------------------
def cancel(experiment: str, run: str | None = None, tracking_uri: str | None = None) -> tuple[str, int]:
    """Stop the queued and running runs of an experiment (or one run or group): they end KILLED.
    Returns the experiment's name and how many runs were cancelled."""
    name, spec_uri = experiment_name(experiment)
    uri = resolve_uri(tracking_uri, spec_uri)
    lock = submit_lock(name, uri, ".")
    database = sqlite_path(uri)
    if database is not None and (database.exists() or lock.path.exists()):
        # a local submission starts its runs, then records them (under this lock); a first one creates the
        # store only then, so its lock file is what says it is on its way
        with lock:  # once it lets go, every run it started has its record
            pass
    ledger, experiment_id, name = open_experiment(experiment, tracking_uri)
    records = [r for r in ledger.runs(experiment_id) if r.status in ACTIVE]
    if run:
        records = [r for r in records if run in (r.run_id, r.key, r.tags.get(Tag.GROUP), r.tags.get(Tag.JOB_ID))]
    by_backend: dict[str, list[Job]] = {}
    for record in records:
        job = Job(record.tags.get(Tag.JOB_ID, ""), RunDir(Path(record.tags[Tag.RUN_DIR])))
        by_backend.setdefault(record.tags.get(Tag.BACKEND, "local"), []).append(job)
    for backend_name, jobs in by_backend.items():  # one cancel per backend (slurm: one scancel)
        make_backend(backend_name).cancel(jobs)
        for job in jobs:
            ledger.close_dead(job.run_dir, "cancelled by orch cancel")
    groups.update_groups(ledger, experiment_id)
    return name, len(records)


def sync(workdir: Path = Path("mlruns/jobs"), tracking_uri: str | None = None) -> dict[str, int]:
    """Ingest run journals that did not reach MLflow (runs on nodes without network, a crashed orchestrator).
    Returns how many run directories had new lines and how many of them ended."""
    if not workdir.is_dir():
        raise InputError("not a directory", str(workdir))
    ledgers: dict[str, Ledger] = {}
    counts = {"ingested": 0, "ended": 0}
    for spec_file in sorted(workdir.glob("*/*/run.json")):
        run_dir = RunDir(spec_file.parent)
        uri = tracking_uri or run_dir.load().tracking_uri or resolve_uri(None)
        ledger = ledgers.setdefault(uri, Ledger(uri))
        before = run_dir.read_cursor().get("offset", 0)
        ended = ledger.ingest(run_dir)
        moved = run_dir.read_cursor().get("offset", 0) != before
        counts["ingested"] += moved
        counts["ended"] += bool(ended and moved)  # ended by these lines, not already recorded
    return counts


def compare(
    experiment: str,
    metric: str | list[str] | None = None,
    mode: str | None = None,
    baseline: str | None = None,
    by: list[str] | None = None,
    alpha: float = 0.05,
    curve: str | None = None,
    log: bool = True,
    out: Path | None = None,
    tracking_uri: str | None = None,
    where: str | None = None,
    test: str = "t",
) -> Report:
    """Do the groups differ across seeds? The report (statistics, tests, verdicts) of one metric (the first
    of a list, whose comparisons are Holm-corrected with the others': ``compare_study`` returns them all);
    with ``log`` it is also logged to MLflow with its plots, with ``out`` kept in that folder too. ``test``:
    "t" (paired t-test on shared seeds, else Welch's) or "permutation" (Fisher's randomization test, else the
    permutation test)."""
    metrics = [metric] if isinstance(metric, str) else metric
    study = compare_study(experiment, metrics, mode, baseline, by, alpha, curve, log, out, tracking_uri, where, test)
    return study.report


def compare_study(
    experiment: str,
    metrics: list[str] | None = None,
    mode: str | None = None,
    baseline: str | None = None,
    by: list[str] | None = None,
    alpha: float = 0.05,
    curve: str | None = None,
    log: bool = True,
    out: Path | None = None,
    tracking_uri: str | None = None,
    where: str | None = None,
    test: str = "t",
    table: str | None = None,
    table_out: Path | None = None,
    curves: bool = False,
) -> Study:
    """`orch compare` over one or several metrics (``NAME`` or ``NAME:min``/``NAME:max``), every comparison
    of every metric Holm-corrected as one family; ``table`` ("latex" or "markdown") writes the paper table to
    ``table_out`` (default: compare-<experiment>.tex / .md here); ``curves`` logs every per-step metric's
    mean and interval on the group parents and draws them."""
    from orchestrator.analysis.papertable import KINDS
    from orchestrator.analysis.publish import publish
    from orchestrator.analysis.study import run_study, write_table

    if table is not None and table not in KINDS:  # before anything is read or written
        raise InputError(f"expected one of: {', '.join(KINDS)}, got '{table}'", "--table")
    name, spec_uri = experiment_name(experiment)
    ledger = Ledger(resolve_uri(tracking_uri, spec_uri), create=False)
    study = run_study(ledger, name, metrics, mode, baseline, by, alpha, curve, where=where, test=test)
    if table is not None:
        write_table(study, table, table_out)
    publish(ledger, study, out, log, curves)
    return study


# -- the store's experiments -------------------------------------------------------------------------
@dataclass
class ExperimentSummary:
    name: str
    runs: int  # seed run keys (what status counts: the attempt that stands for each key)
    attempts: int  # seed runs of every attempt, superseded ones included
    groups: int
    finished: int  # run keys with a FINISHED attempt
    last_activity: float | None  # seconds since the epoch: the latest start, end or metric of any of its runs


def list_experiments(tracking_uri: str | None = None) -> list[ExperimentSummary]:
    """``orch ls``: the store's experiments with orch runs, most recently active first."""
    from orchestrator.tracking.records import Role, latest_per_key

    ledger = Ledger(resolve_uri(tracking_uri), create=False)
    out = []
    for experiment_id, name, last_ms in ledger.experiments():
        seeds = ledger.runs(experiment_id)
        groups = ledger.runs(experiment_id, role=Role.GROUP)
        if not seeds and not groups:
            continue
        standing = latest_per_key(seeds)
        finished = sum(r.status == FINISHED for r in standing)
        out.append(
            ExperimentSummary(name, len(standing), len(seeds), len(groups), finished, last_ms and last_ms / 1000)
        )
    return sorted(out, key=lambda e: e.last_activity or 0, reverse=True)


def created_folder(run) -> Path | None:
    """The run directory this store's run created, else None. A run's directory tag is not proof: an
    imported run's names the source store's directory, and a bundle's tags can be crafted. A directory is
    this run's when its run.json names the run (a tune trial: every seed's run.json names the trial)."""
    tags = run.data.tags
    if Tag.SOURCE_RUN_ID in tags or not tags.get(Tag.RUN_DIR):
        return None
    folder = Path(tags[Tag.RUN_DIR])
    if tags.get(Tag.TRIAL_ID):
        specs, key, owner = list(folder.glob("seed*/run.json")), "trial_id", tags[Tag.TRIAL_ID]
    else:
        specs, key, owner = [folder / "run.json"], "run_id", run.info.run_id
    try:
        owned = bool(specs) and all(json.loads(s.read_text()).get(key) == owner for s in specs)
    except (OSError, ValueError, AttributeError):
        return None
    return folder if owned and not folder.is_symlink() else None


def delete_experiment(name: str, tracking_uri: str | None = None) -> tuple[int, int]:
    """``orch delete``: every run of the experiment and its run directories. The experiment is renamed
    before MLflow's (soft) delete, so the name is free: a later submit starts afresh instead of restoring
    it. Returns the MLflow runs and run directories deleted."""
    import shutil
    import time

    from orchestrator.tracking.records import search_all

    ledger, experiment_id, name = open_experiment(name, tracking_uri)
    active = [r for r in ledger.runs(experiment_id) if r.status in ACTIVE]
    if active:
        raise InputError(f"{len(active)} run(s) of '{name}' are queued or running: orch cancel {name} first")
    runs = search_all(ledger.client, experiment_id)
    removed = 0
    for folder in {f for f in map(created_folder, runs) if f is not None}:
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    for run in runs:
        ledger.client.delete_run(run.info.run_id)
    ledger.client.rename_experiment(experiment_id, f"{name}.deleted-{time.strftime('%Y%m%d-%H%M%S')}")
    ledger.client.delete_experiment(experiment_id)
    return len(runs), removed
