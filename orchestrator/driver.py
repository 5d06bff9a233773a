"""The orchestrator's side of a submission, one direction (docs/architecture.md):
spec -> plan -> reconcile with MLflow -> prepare (MLflow runs + run directories) -> backend.submit
-> follow (poll + ingest journals) -> summary. Side effects are planned first and made after
validation, so bad input leaves nothing behind."""

from __future__ import annotations

import dataclasses
import json
import shutil
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import yaml

from orchestrator.backends.base import DONE, LOST, Backend, Job
from orchestrator.backends.base import RUNNING as JOB_RUNNING
from orchestrator.job.journal import decode_number, has_started, last_event, last_metrics
from orchestrator.job.rundir import RunDir
from orchestrator.provenance import Provenance
from orchestrator.spec import registry
from orchestrator.spec.identity import KEY_SCHEME, defaults_tag, drift, read_defaults_tag
from orchestrator.spec.plan import Run, content_hash, flat_params
from orchestrator.spec.spec import Spec
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.records import (
    ACTIVE,
    FAILED,
    FINISHED,
    KILLED,
    RUNNING,
    SCHEDULED,
    Role,
    RunRecord,
    Tag,
    by_key,
    latest_per_key,
)

LIVE_INGEST_EVERY_S = 2.0
PROGRESS_EVERY_S = 1.0  # running runs' steps read from their journals' tails


@dataclass
class Prepared:
    run: Run
    run_id: str
    run_dir: RunDir
    job_id: str = ""


@dataclass
class Reconciled:
    todo: list[tuple[Run, RunRecord | None]]  # to (re)run, with the latest earlier record if any
    done: list[Run]                           # FINISHED already: never repeated
    active: list[Run]                         # queued or running under a live job
    # finished runs recorded under another default (identity.py: they keep their key): label -> changes
    drifted: dict[str, Drift] = field(default_factory=dict)


@dataclass
class Drift:
    runs: int
    changes: dict[str, tuple[Any, Any]]  # param path -> (recorded default, default now)


def reconcile(runs: list[Run], records: list[RunRecord]) -> Reconciled:
    """FINISHED runs are skipped; RUNNING/SCHEDULED ones are left to their job; FAILED, KILLED and
    missing ones are (re)run. Records must be refreshed first, so dead jobs are not counted active."""
    keyed = by_key(records)
    out = Reconciled([], [], [])
    for run in runs:
        recs = keyed.get(run.key, [])
        statuses = {r.status for r in recs}
        if FINISHED in statuses:
            out.done.append(run)
            finished = next(r for r in recs if r.status == FINISHED)
            changes = drift(read_defaults_tag(finished.tags.get(Tag.DEFAULTS)) or {}, run.defaulted)
            if changes:
                seen = out.drifted.setdefault(run.label, Drift(0, {}))
                seen.runs += 1
                seen.changes.update(changes)
        elif statuses & set(ACTIVE):
            out.active.append(run)
        else:
            out.todo.append((run, recs[0] if recs else None))
    return out


def metric_of(spec: Spec) -> tuple[str, str]:
    if spec.metric:
        return spec.metric.name, spec.metric.mode
    workload = registry.for_spec(spec)
    return workload.metric, workload.mode


# -- refreshing what MLflow believes -----------------------------------------------------------------
def refresh(ledger: Ledger, records: list[RunRecord], backend_for: Callable[[str], Backend]) -> list[RunRecord]:
    """Bring RUNNING/SCHEDULED records up to date: ingest their journals, and close the ones whose job
    is gone (SIGKILL, crash of an earlier orchestrator, node failure) so none stays RUNNING forever.
    Jobs are polled in one batch per backend (one scheduler query for all of them, not one per job)."""
    changed = False
    to_poll: dict[str, list[tuple[RunRecord, Job]]] = defaultdict(list)
    for record in records:
        if record.status not in ACTIVE:
            continue
        run_dir = RunDir(Path(record.tags.get(Tag.RUN_DIR, "")))
        if not run_dir.spec_file.exists():
            ledger.set_status(record.run_id, FAILED, "run directory is missing")
            changed = True
            continue
        before = run_dir.read_cursor().get("offset", 0)
        if ledger.ingest(run_dir):
            changed = True
            continue
        # new lines without an end (a `start`: SCHEDULED -> RUNNING) change the record too: re-read it
        changed |= run_dir.read_cursor().get("offset", 0) != before
        to_poll[record.tags.get(Tag.BACKEND, "local")].append((record, Job(record.tags.get(Tag.JOB_ID, ""), run_dir)))
    for name, items in to_poll.items():
        try:
            backend = backend_for(name)
            states = backend.poll([job for _, job in items])
        except Exception:  # a backend this installation cannot query: leave the records as they are
            continue
        for (record, job), state in zip(items, states):
            if state.state not in (DONE, LOST):
                continue
            reason = state.reason or "the job ended without recording an end"
            if not job.run_dir.journal.exists():  # never started: the next submit continues this same run
                ledger.set_status(record.run_id, KILLED, reason)
            else:
                ledger.close_dead(job.run_dir, reason)
            changed = True
    if not changed:
        return records
    return [ledger.get(r.run_id) if r.status in ACTIVE else r for r in records]


# -- preparing runs ----------------------------------------------------------------------------------
def chance_tag(spec: Spec) -> dict[str, str]:
    """The workload's chance levels, on each group so that `orch compare` reads them without the workload."""
    chance = dict(registry.for_spec(spec).chance)
    return {Tag.CHANCE: json.dumps(chance, sort_keys=True)} if chance else {}


def _group_tags(spec: Spec, run: Run, seeds_requested: int, code: Provenance,
                chance: dict[str, str]) -> dict[str, str]:
    metric, mode = metric_of(spec)
    return {Tag.ROLE: Role.GROUP, Tag.GROUP: run.group, Tag.VARIANT: run.variant,
            Tag.GRID_POINT: yaml.safe_dump(run.grid_point, default_flow_style=True).strip() if run.grid_point else "",
            Tag.WORKLOAD: run.workload, Tag.SPEC: spec.source, Tag.METRIC: metric, Tag.MODE: mode,
            Tag.SEEDS_REQUESTED: str(seeds_requested), **identity_tags(run), **chance, **code.tags()}


def identity_tags(run: Run) -> dict[str, str]:
    """How the run's key was made, and what it left out at its default (a later change of default is seen)."""
    return {Tag.KEY_SCHEME: str(KEY_SCHEME), Tag.DEFAULTS: defaults_tag(run.defaulted)}


def ensure_groups(ledger: Ledger, experiment_id: str, spec: Spec, runs: list[Run],
                  code: Provenance | None = None) -> dict[str, str]:
    """One parent run per group; records how many seeds were asked for, so status can count missing ones,
    and the code each submission ran (``code/<snapshot>/`` artifacts, once per snapshot)."""
    code = code or Provenance(spec)
    parents = {r.tags.get(Tag.GROUP): r for r in ledger.runs(experiment_id, role=Role.GROUP)}
    seeds_by_group: dict[str, int] = defaultdict(int)
    for run in runs:
        seeds_by_group[run.group] = max(seeds_by_group[run.group], run.index + 1)
    ids: dict[str, str] = {}
    spec_text = yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
    code_tags = code.tags()
    chance = chance_tag(spec)
    for run in {r.group: r for r in runs}.values():
        parent = parents.get(run.group)
        requested = seeds_by_group[run.group]
        if parent is None:
            run_id = ledger.create_run(experiment_id, run.label, _group_tags(spec, run, requested, code, chance),
                                       flat_params(run), status=RUNNING)
            ledger.log_text(run_id, spec_text, "spec.yaml")
        else:
            run_id = parent.run_id
            updates: dict[str, object] = {}
            if requested > int(parent.tags.get(Tag.SEEDS_REQUESTED, 0)):
                updates[Tag.SEEDS_REQUESTED] = requested
            if chance and parent.tags.get(Tag.CHANCE) != chance[Tag.CHANCE]:
                updates.update(chance)  # a group recorded before its workload declared them
            if parent.tags.get(Tag.DEFAULTS) != defaults_tag(run.defaulted):
                updates.update(identity_tags(run))  # the latest submission's defaults (mark_defaults)
            if parent.tags.get(Tag.CODE) == code_tags.get(Tag.CODE) and Tag.CODE in code_tags:
                run_id = ""  # this code is on record already
            else:
                updates.update(code_tags)  # the parent says which code its latest seeds ran
            if updates:
                ledger.set_tags(parent.run_id, updates)
        if run_id:
            for path, text in code.artifacts().items():
                ledger.log_text(run_id, text, path)
        ids[run.group] = parent.run_id if parent is not None else run_id
    return ids


def mark_defaults(ledger: Ledger, experiment_id: str, runs: list[Run]) -> None:
    """Each group parent holds the defaults of the latest submission, so that status and compare, which read
    records only, can name the seeds recorded under another default (analysis/status.py)."""
    parents = {r.tags.get(Tag.GROUP): r for r in ledger.runs(experiment_id, role=Role.GROUP)}
    for run in {r.group: r for r in runs}.values():
        parent = parents.get(run.group)
        if parent is not None and parent.tags.get(Tag.DEFAULTS) != defaults_tag(run.defaulted):
            ledger.set_tags(parent.run_id, identity_tags(run))


@dataclass
class Decided:
    """A run to execute, and where: its run directory and MLflow run (``reused``: an earlier attempt's,
    continued; else a new one, whose id ``record_runs`` either takes from ``run_id`` or fills in)."""
    run: Run
    run_dir: RunDir
    run_id: str
    reused: bool


def decide(spec: Spec, todo: list[tuple[Run, RunRecord | None]], fresh: bool = False) -> list[Decided]:
    """An earlier attempt is continued in the same MLflow run when it left a checkpoint (it resumes) or never
    started; otherwise it keeps its record (FAILED/KILLED, with its traceback) and its run directory is
    archived beside the new one. Touches run directories only, not the store."""
    workdir = Path(spec.workdir).resolve() / spec.name
    decided = []
    for run, previous in todo:
        run_dir = RunDir(workdir / run.key)
        started = has_started(run_dir.journal)  # not "a journal exists": cancelled while queued journals an end
        # never started = no start journaled AND nothing recorded (a deleted run directory is not a fresh start)
        never_started = previous is not None and not started and not previous.metrics
        reuse = previous is not None and not fresh and (run_dir.has_checkpoint() or never_started)
        if run_dir.path.exists() and not reuse:
            archived = run_dir.path.with_name(f"{run.key}.{previous.run_id[:8] if previous else content_hash(time.time(), 8)}")
            shutil.move(run_dir.path, archived)
        decided.append(Decided(run, run_dir, previous.run_id if reuse and previous is not None else uuid.uuid4().hex,
                               reuse))
    return decided


def record_runs(ledger: Ledger, experiment_id: str, spec: Spec, decided: list[Decided], backend_name: str,
                job_id: str, code: Provenance, keep_ids: bool = False) -> None:
    """The MLflow side of ``decided``: the group parents, the new runs (in one transaction, sqlwrite.py;
    with the ids chosen in ``decide`` when ``keep_ids``, else the store's, written back), the continued
    ones tagged with this submission's code and SCHEDULED."""
    parents = ensure_groups(ledger, experiment_id, spec, [d.run for d in decided], code)
    code_tags = code.tags()
    tags = {Tag.ROLE: Role.SEED, Tag.BACKEND: backend_name, Tag.DRIVER_HOST: socket.gethostname(), Tag.JOB_ID: job_id,
            **code_tags}
    new = [d for d in decided if not d.reused]
    ids = ledger.create_runs(experiment_id, [
        (f"{d.run.label}/seed{d.run.seed}", {**tags, **identity_tags(d.run), Tag.KEY: d.run.key, Tag.GROUP: d.run.group,
                                             Tag.VARIANT: d.run.variant,
                                             Tag.SEED: str(d.run.seed), Tag.WORKLOAD: d.run.workload,
                                             Tag.RUN_DIR: str(d.run_dir.path)}, flat_params(d.run), parents[d.run.group])
        for d in new], run_ids=[d.run_id for d in new] if keep_ids else None)
    for item, run_id in zip(new, ids):
        item.run_id = run_id
    for item in decided:
        if item.reused:
            ledger.set_tags(item.run_id, {Tag.BACKEND: backend_name, Tag.RUN_DIR: str(item.run_dir.path),
                                          Tag.JOB_ID: job_id, **code_tags, **identity_tags(item.run)})  # what it runs now
            ledger.set_status(item.run_id, SCHEDULED)


def write_run_dirs(spec: Spec, decided: list[Decided], tracking_uri: str, code_fields: dict[str, object],
                   job_id: str = "") -> list[Prepared]:
    """Each run's directory with its run.json: what a worker needs, and nothing it has to ask the store."""
    metric, mode = metric_of(spec)
    prepared = []
    for item in decided:
        item.run_dir.create({"run": item.run.to_dict(), "run_id": item.run_id, "tracking_uri": tracking_uri,
                             "cpus": spec.resources.cpus, "gpus": spec.resources.gpus,
                             "mem_gb": spec.resources.mem_gb, "metric": metric, "mode": mode, **code_fields})
        if item.reused and item.run_dir.cursor.exists():
            cursor = item.run_dir.read_cursor()
            cursor["ended"] = None
            item.run_dir.write_cursor(cursor)
        prepared.append(Prepared(item.run, item.run_id, item.run_dir, job_id))
    return prepared


def prepare(ledger: Ledger, experiment_id: str, spec: Spec, todo: list[tuple[Run, RunRecord | None]],
            backend_name: str, fresh: bool = False, job_id: str = "", code: Provenance | None = None) -> list[Prepared]:
    """Create (or reuse) the MLflow run and the run directory of each run to execute (``decide``), the
    records first. (A local submission on an sqlite store starts its runs before recording them:
    ``api.Submission.launch``.)"""
    if not todo:
        return []
    code = code or Provenance(spec)
    code_fields = code.job_fields()  # takes the snapshot before anything of this submission runs
    decided = decide(spec, todo, fresh)
    record_runs(ledger, experiment_id, spec, decided, backend_name, job_id, code)
    return write_run_dirs(spec, decided, ledger.uri, code_fields, job_id)


def record_job_ids(ledger: Ledger, prepared: list[Prepared], job_ids: list[str]) -> None:
    """Tag each run with its scheduler job id (skipped when prepare already knew it, as for local)."""
    for item, job_id in zip(prepared, job_ids):
        if item.job_id != job_id:
            item.job_id = job_id
            ledger.set_tags(item.run_id, {Tag.JOB_ID: job_id})


# -- following jobs ----------------------------------------------------------------------------------
@dataclass
class RunProgress:
    """Where a running run stands, from the tail of its journal."""
    label: str
    step: int | None                 # the last logged step (None: nothing logged yet)
    metrics: dict[str, float]        # the values logged at that step
    rate: float | None               # steps per second since the run started


class ProgressSink(Protocol):
    """What ``follow`` reports to (the CLI draws a progress bar and a table of running runs; tests and
    notebooks may pass nothing). ``active`` is refreshed about once a second."""

    def update(self, done: int, running: int, failed: int, killed: int, total: int,
               active: list[RunProgress]) -> None: ...


class _Silent:
    def update(self, done: int, running: int, failed: int, killed: int, total: int,
               active: list[RunProgress]) -> None:
        pass


def run_progress(label: str, run_dir: RunDir, started_at: dict[str, float]) -> RunProgress:
    """``started_at`` caches each run directory's start time (read once from its journal's start event)."""
    where = str(run_dir.path)
    if where not in started_at:
        start = last_event(run_dir.journal, "start")
        if start is None:
            return RunProgress(label, None, {}, None)
        started_at[where] = start["t"]
    record = last_metrics(run_dir.journal)
    if record is None:
        return RunProgress(label, None, {}, None)
    elapsed = record["t"] - started_at[where]
    rate = (record["step"] + 1) / elapsed if elapsed > 0 else None
    return RunProgress(label, record["step"], {k: decode_number(v) for k, v in record["metrics"].items()}, rate)


def follow(ledger: Ledger, backend: Backend, prepared: list[Prepared], sink: ProgressSink | None = None,
           poll_s: float = 0.05) -> dict[str, str]:
    """Poll until every job ended, ingesting journals (live every few seconds, fully at the end).
    Ctrl-C cancels: running jobs end KILLED, their journals ingested, nothing half-written."""
    sink = sink or _Silent()
    jobs = {p.run_id: Job(p.job_id, p.run_dir) for p in prepared}
    by_id = {p.run_id: p for p in prepared}
    results: dict[str, str] = {}
    last_live = -LIVE_INGEST_EVERY_S  # at once: runs may have started before their records existed (api.launch)
    last_shown = time.monotonic()
    started_at: dict[str, float] = {}
    active: list[RunProgress] = []
    try:
        while len(results) < len(jobs):
            pending_ids = [rid for rid in jobs if rid not in results]
            states = backend.poll([jobs[rid] for rid in pending_ids])
            running, ended = [], []
            for run_id, state in zip(pending_ids, states):
                if state.state in (DONE, LOST):
                    ended.append((run_id, state.reason))
                elif state.state == JOB_RUNNING:
                    running.append(run_id)
            if ended:  # the runs that ended since the last poll: one write (Ledger.ingest_many)
                for (run_id, reason), status in zip(ended, ledger.ingest_many([jobs[r].run_dir for r, _ in ended])):
                    results[run_id] = status or ledger.close_dead(jobs[run_id].run_dir,
                                                                  reason or "the job ended without recording an end")
            if time.monotonic() - last_live > LIVE_INGEST_EVERY_S:
                ledger.ingest_many([jobs[run_id].run_dir for run_id in running])
                last_live = time.monotonic()
            if time.monotonic() - last_shown > PROGRESS_EVERY_S:
                active = [run_progress(f"{by_id[r].run.label}/seed{by_id[r].run.seed}", by_id[r].run_dir, started_at)
                          for r in running]
                last_shown = time.monotonic()
            killed = sum(1 for s in results.values() if s == KILLED)  # cancelled or interrupted: not a failure
            failed = sum(1 for s in results.values() if s not in (FINISHED, KILLED))
            sink.update(len(results), len(running), failed, killed, len(jobs), active)
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


def update_groups(ledger: Ledger, experiment_id: str, records: list[RunRecord] | None = None) -> list[RunRecord]:
    """A parent's status summarises its children: FINISHED when all asked seeds finished, FAILED when
    any failed, RUNNING otherwise. Returns the parents, up to date."""
    records = ledger.runs(experiment_id) if records is None else records
    latest_by_group: dict[str, list[str]] = defaultdict(list)
    seeds_by_group: dict[str, list[RunRecord]] = defaultdict(list)
    for best in latest_per_key(records):
        latest_by_group[best.tags.get(Tag.GROUP, "")].append(best.status)
        seeds_by_group[best.tags.get(Tag.GROUP, "")].append(best)
    parents = []
    for parent in ledger.runs(experiment_id, role=Role.GROUP):
        statuses = latest_by_group.get(parent.tags.get(Tag.GROUP, ""), [])
        requested = int(parent.tags.get(Tag.SEEDS_REQUESTED, 0))
        if statuses.count(FINISHED) >= requested and requested:
            status = FINISHED
        elif any(s in (FAILED, KILLED) for s in statuses):
            status = FAILED
        else:
            status = RUNNING
        if parent.status != status:
            if status == FINISHED:  # every asked seed is in: the group's aggregates, sortable in the MLflow UI
                log_aggregates(ledger, parent, seeds_by_group[parent.tags.get(Tag.GROUP, "")])
            ledger.set_status(parent.run_id, status)
            parent = dataclasses.replace(parent, status=status)
        parents.append(parent)
    return parents


def log_aggregates(ledger: Ledger, parent: RunRecord, seeds: list[RunRecord]) -> None:
    """``<metric>_mean``, ``_std``, ``_ci_low``, ``_ci_high``, ``_n`` of the group's FINISHED seeds."""
    from orchestrator.analysis.interval import aggregates  # scipy.special: only when a group completes
    metric = parent.tags.get(Tag.METRIC, "")
    values = [r.metrics[metric] for r in seeds if r.status == FINISHED and metric in r.metrics]
    if metric and values:
        ledger.log_values(parent.run_id, aggregates(metric, values))
