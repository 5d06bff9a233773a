"""The orchestrator's side of a submission, one direction (docs/architecture.md):
spec -> plan -> reconcile with MLflow -> prepare (MLflow runs + run directories) -> backend.submit
-> follow (poll + ingest journals, ``follow.py``) -> summary (the group parents, ``groups.py``). Side
effects are planned first and made after validation, so bad input leaves nothing behind. The steps are
functions; ``api.Submission`` owns their sequence."""

from __future__ import annotations

import shutil
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator import groups
from orchestrator.backends.base import DONE, LOST, Backend, Job, backend_class
from orchestrator.job.journal import has_started
from orchestrator.job.rundir import RunDir
from orchestrator.provenance import Provenance
from orchestrator.spec.identity import drift, read_defaults_tag
from orchestrator.spec.plan import Run, content_hash, flat_params
from orchestrator.spec.spec import Spec
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.records import (
    ACTIVE,
    FAILED,
    FINISHED,
    KILLED,
    SCHEDULED,
    TERMINAL,
    Role,
    RunRecord,
    Tag,
    by_key,
)


@dataclass
class Prepared:
    run: Run
    run_id: str
    run_dir: RunDir
    job_id: str = ""


@dataclass
class Reconciled:
    todo: list[tuple[Run, RunRecord | None]]  # to (re)run, with the latest earlier record if any
    done: list[Run]  # FINISHED already: never repeated
    active: list[Run]  # queued or running under a live job
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
        for (record, job), state in zip(items, states, strict=False):
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


def record_accounting(ledger: Ledger, records: list[RunRecord], backend_for: Callable[[str], Backend]) -> None:
    """The scheduler's record of each ended run's job (Slurm: sacct's elapsed time, state, exit code, nodes,
    allocation and memory peak) as ``orch.sched.*`` tags, once: so that a run OOM-killed, preempted or timed
    out says so in MLflow. One query per backend, for the ended runs that have none yet."""
    pending: dict[str, list[tuple[RunRecord, Job]]] = defaultdict(list)
    for r in records:
        if r.status in TERMINAL and Tag.SCHED_STATE not in r.tags and r.tags.get(Tag.JOB_ID):
            job = Job(r.tags[Tag.JOB_ID], RunDir(Path(r.tags.get(Tag.RUN_DIR, ""))))
            pending[r.tags.get(Tag.BACKEND, "local")].append((r, job))
    for name, items in pending.items():
        try:
            if backend_class(name).accounting is Backend.accounting:
                continue  # keeps no accounting (local, Ray): no instance made only to hear nothing
            found = backend_for(name).accounting([job for _, job in items])
        except Exception:
            continue
        for record, job in items:
            fields = found.get(job.job_id)
            if fields:
                ledger.set_tags(record.run_id, {f"{Tag.SCHED_PREFIX}{k}": v for k, v in fields.items()})


# -- preparing runs ----------------------------------------------------------------------------------
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
            archived = run_dir.path.with_name(
                f"{run.key}.{previous.run_id[:8] if previous else content_hash(time.time(), 8)}"
            )
            shutil.move(run_dir.path, archived)
        decided.append(
            Decided(run, run_dir, previous.run_id if reuse and previous is not None else uuid.uuid4().hex, reuse)
        )
    return decided


def record_runs(
    ledger: Ledger,
    experiment_id: str,
    spec: Spec,
    decided: list[Decided],
    backend_name: str,
    job_id: str,
    code: Provenance,
    keep_ids: bool = False,
) -> None:
    """The MLflow side of ``decided``: the group parents, the new runs (in one transaction, sqlwrite.py;
    with the ids chosen in ``decide`` when ``keep_ids``, else the store's, written back), the continued
    ones tagged with this submission's code and SCHEDULED."""
    parents = groups.ensure_groups(ledger, experiment_id, spec, [d.run for d in decided], code)
    code_tags = code.tags()
    tags = {
        Tag.ROLE: Role.SEED,
        Tag.BACKEND: backend_name,
        Tag.DRIVER_HOST: socket.gethostname(),
        Tag.JOB_ID: job_id,
        **code_tags,
    }
    new = [d for d in decided if not d.reused]
    ids = ledger.create_runs(
        experiment_id,
        [
            (
                f"{d.run.label}/seed{d.run.seed}",
                {
                    **tags,
                    **groups.identity_tags(d.run),
                    Tag.KEY: d.run.key,
                    Tag.GROUP: d.run.group,
                    Tag.VARIANT: d.run.variant,
                    Tag.SEED: str(d.run.seed),
                    Tag.WORKLOAD: d.run.workload,
                    Tag.RUN_DIR: str(d.run_dir.path),
                },
                flat_params(d.run),
                parents[d.run.group],
            )
            for d in new
        ],
        run_ids=[d.run_id for d in new] if keep_ids else None,
    )
    for item, run_id in zip(new, ids, strict=False):
        item.run_id = run_id
    for item in decided:
        if item.reused:
            ledger.set_tags(
                item.run_id,
                {
                    Tag.BACKEND: backend_name,
                    Tag.RUN_DIR: str(item.run_dir.path),
                    Tag.JOB_ID: job_id,
                    **code_tags,
                    **groups.identity_tags(item.run),
                },
            )  # what it runs now
            ledger.set_status(item.run_id, SCHEDULED)


def write_run_dirs(
    spec: Spec, decided: list[Decided], tracking_uri: str, code_fields: dict[str, object], job_id: str = ""
) -> list[Prepared]:
    """Each run's directory with its run.json: what a worker needs, and nothing it has to ask the store."""
    metric, mode = groups.metric_of(spec)
    prepared = []
    for item in decided:
        item.run_dir.create(
            {
                "run": item.run.to_dict(),
                "run_id": item.run_id,
                "tracking_uri": tracking_uri,
                "cpus": spec.resources.cpus,
                "gpus": spec.resources.task_gpus,
                "nodes": spec.resources.nodes,
                "tasks_per_node": spec.resources.layout,
                "mem_gb": spec.resources.mem_gb,
                "system_metrics_s": spec.tracking.system_metrics_s,
                "stall_after_s": spec.tracking.stall_after_s,
                "experiment": spec.name,
                "notify": spec.notify.model_dump() if spec.notify else None,
                "metric": metric,
                "mode": mode,
                **code_fields,
            }
        )
        if item.reused and item.run_dir.cursor.exists():
            cursor = item.run_dir.read_cursor()
            cursor["ended"] = None
            item.run_dir.write_cursor(cursor)
        prepared.append(Prepared(item.run, item.run_id, item.run_dir, job_id))
    return prepared


def prepare(
    ledger: Ledger,
    experiment_id: str,
    spec: Spec,
    todo: list[tuple[Run, RunRecord | None]],
    backend_name: str,
    fresh: bool = False,
    job_id: str = "",
    code: Provenance | None = None,
) -> list[Prepared]:
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
    for item, job_id in zip(prepared, job_ids, strict=False):
        if item.job_id != job_id:
            item.job_id = job_id
            ledger.set_tags(item.run_id, {Tag.JOB_ID: job_id})


# -- following jobs ----------------------------------------------------------------------------------
