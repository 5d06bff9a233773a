"""orch's use cases as Python functions: what the CLI calls, and what a notebook or a script may call.

Nothing here prints: each function returns values (records, statuses, reports) and raises ``InputError``
for bad input before anything is created. The long one, a submission, is a sequence of steps the caller
drives (``plan_submission`` -> ``Submission.reconcile`` -> ``launch`` -> ``follow``), so that a front end
can show what happens between them; ``submit`` runs them all::

    from orchestrator import api
    result = api.submit("configs/smoke.yaml", seeds=5)
    groups = api.status("smoke").groups
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import driver, follow, groups, privacy, rekey
from orchestrator.backends.base import Backend, Job, backend_class
from orchestrator.backends.base import make as make_backend
from orchestrator.errors import InputError, did_you_mean
from orchestrator.experiments import (  # the use cases after a submission, re-exported: the CLI and `orch` read api
    ExperimentStatus,
    ExperimentSummary,
    cancel,
    compare,
    created_folder,
    delete_experiment,
    experiment_name,
    find_run,
    list_experiments,
    open_experiment,
    reproduce,
    run_logs,
    runs,
    status,
    sync,
)
from orchestrator.provenance import Provenance
from orchestrator.spec.plan import Run, expand
from orchestrator.spec.spec import Spec, load_spec
from orchestrator.tracking import notify
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.lock import SubmitLock, submit_lock
from orchestrator.tracking.records import FINISHED, RunRecord, Tag, by_key
from orchestrator.tracking.uri import resolve_uri

if TYPE_CHECKING:  # the analysis modules are imported where they are used
    pass


# -- submitting --------------------------------------------------------------------------------------
@dataclass
class Submission:
    """One ``orch submit``: the validated spec and its runs, then what reconciling and launching found."""

    spec: Spec
    runs: list[Run]
    uri: str
    max_parallel: int | None = None
    ray_address: str | None = None
    backend: Backend | None = None
    ledger: Ledger | None = None
    experiment_id: str = ""
    reconciled: driver.Reconciled | None = None
    prepared: list[driver.Prepared] = field(default_factory=list)
    job_ids: list[str] = field(default_factory=list)
    lock: SubmitLock | None = None

    def reconcile(self) -> driver.Reconciled:
        """Build the backend (it refuses an impossible request before anything exists), open the experiment,
        bring its runs up to date and sort the planned runs into done / active / to run."""
        self.backend = make_backend(
            self.spec.backend, self.spec, max_parallel=self.max_parallel, ray_address=self.ray_address
        )
        # Held until launch() handed the runs to the backend: another submit of this experiment waits, then
        # finds them queued instead of creating them twice (orchestrator/tracking/lock.py).
        if not self._experiment_exists():  # a new experiment runs everything: refused before the store is touched
            self.backend.check_submission(len(self.runs))
        self.lock = submit_lock(self.spec.name, self.uri, self.spec.workdir).acquire()
        try:
            self.ledger = Ledger(self.uri)
            # created in launch(), once it is sure to run something (and, locally, once its runs started)
            self.experiment_id = self.ledger.experiment_id(self.spec.name) or ""
            records = driver.refresh(
                self.ledger, self.ledger.runs(self.experiment_id) if self.experiment_id else [], self._backend_for
            )
            if self.experiment_id:  # runs recorded under key scheme 1 get scheme-2 keys: found, not rerun
                records = rekey.adopt(self.ledger, self.experiment_id, self.runs, records)
            self.reconciled = driver.reconcile(self.runs, records)
            if self.experiment_id and (self.reconciled.drifted or self.spec.tuning is not None):
                groups.mark_done(self.ledger, self.experiment_id, self.spec, self.reconciled.done)
            self.backend.check_submission(len(self.reconciled.todo))  # before launch() makes runs and directories
        except BaseException:
            self.lock.release()
            raise
        return self.reconciled

    def _backend_for(self, name: str) -> Backend:
        """This submission's backend for its own runs; another one (earlier runs of the experiment) made anew."""
        if name == self.spec.backend and self.backend is not None:
            return self.backend
        return make_backend(name)

    @property
    def backend_class(self) -> type[Backend]:
        return backend_class(self.spec.backend)

    @cached_property
    def provenance(self) -> Provenance:
        return Provenance(self.spec)

    def _experiment_exists(self) -> bool:
        try:
            return Ledger(self.uri, create=False).experiment_id(self.spec.name) is not None
        except InputError:  # no store yet
            return False

    def preview(self) -> driver.Reconciled:
        """What ``reconcile`` would find, read-only (``--dry-run``): no backend, no store or experiment
        created, no record changed. Runs of jobs that died unseen still count as active here."""
        try:
            ledger = Ledger(self.uri, create=False)
        except InputError:  # no store yet: everything is new
            return driver.reconcile(self.runs, [])
        experiment_id = ledger.experiment_id(self.spec.name)
        if not experiment_id:
            return driver.reconcile(self.runs, [])
        return driver.reconcile(
            self.runs, rekey.adopt(ledger, experiment_id, self.runs, ledger.runs(experiment_id), write=False)
        )

    def launch(self) -> list[driver.Prepared]:
        """Create the MLflow runs and run directories of what is to run, and hand them to the backend."""
        assert self.ledger is not None and self.backend is not None and self.reconciled is not None, "reconcile() first"
        try:
            if self.reconciled.todo:
                self.backend.warm(self.provenance.job_fields())  # e.g. local: the forkserver imports the workload
                # sqlite only: `orch cancel` finds its lock beside the store, and waits for the records
                if self.backend.starts_before_recording and self.ledger.sqlite_path is not None:
                    self._start_then_record()
                else:
                    self.experiment_id = self.ledger.experiment_id(self.spec.name, create=True)
                    self.prepared = driver.prepare(
                        self.ledger,
                        self.experiment_id,
                        self.spec,
                        self.reconciled.todo,
                        self.spec.backend,
                        job_id=self.backend.job_id,
                        code=self.provenance,
                    )
                    self.job_ids = self.backend.submit([p.run_dir for p in self.prepared])
                    driver.record_job_ids(self.ledger, self.prepared, self.job_ids)
                if self.prepared:  # its end, notified once all its runs ended (whoever sees it: tracking/notify.py)
                    notify.expect_end(
                        self.prepared[0].run_dir.path.parent,
                        self.spec.notify.model_dump() if self.spec.notify else None,
                        self.spec.name,
                        [p.run_id for p in self.prepared],
                    )
        finally:
            if self.lock is not None:
                self.lock.release()
        return self.prepared

    def _start_then_record(self) -> None:
        """Local runs start before their MLflow records exist: creating them (importing MLflow, the
        experiment, the parents, the rows) takes seconds that short runs need not wait for. The runs are
        named here (an SQL store takes orch's ids) and ingested only once recorded (``follow``). Should
        recording fail, the started runs are cancelled; their directories carry no record, so the next
        submit runs them again (and archives these)."""
        assert self.ledger is not None and self.backend is not None and self.reconciled is not None
        job_id = self.backend.job_id
        # A Ctrl-C is held back from the first start to the last record (a run started and not recorded,
        # or a record half made, would be worse than a Ctrl-C that takes a second), then acted on.
        with deferred_interrupt() as interrupted:
            decided = driver.decide(self.spec, self.reconciled.todo)
            self.prepared = driver.write_run_dirs(
                self.spec, decided, self.ledger.uri, self.provenance.job_fields(), job_id
            )
            self.job_ids = self.backend.submit([p.run_dir for p in self.prepared])
            jobs = [Job(job_id, p.run_dir) for p in self.prepared]
            try:
                self.experiment_id = self.ledger.experiment_id(self.spec.name, create=True)
                driver.record_runs(
                    self.ledger,
                    self.experiment_id,
                    self.spec,
                    decided,
                    self.spec.backend,
                    job_id,
                    self.provenance,
                    keep_ids=True,
                )
            except BaseException:
                self.backend.cancel(jobs)
                raise
        if interrupted():  # as a Ctrl-C while following: the runs end KILLED, recorded
            self.stop()
            raise KeyboardInterrupt

    def stop(self, reason: str = "cancelled (Ctrl-C)") -> None:
        """Cancel the launched runs that have not ended and record them KILLED: for a Ctrl-C that lands
        during ``launch`` or between it and ``follow`` (``follow`` handles its own)."""
        if self.backend is None or self.ledger is None or not self.backend.blocking:
            return
        alive = [p for p in self.prepared if not self.ledger.ingest(p.run_dir)]
        self.backend.cancel([Job(p.job_id, p.run_dir) for p in alive])
        for item in alive:
            self.ledger.close_dead(item.run_dir, reason)

    def follow(self, sink: follow.ProgressSink | None = None) -> dict[str, str]:
        """Until every launched job ended: run id -> final status. Ctrl-C: see ``driver.follow``."""
        assert self.ledger is not None and self.backend is not None, "launch() first"
        try:
            return follow.follow(self.ledger, self.backend, self.prepared, sink)
        finally:
            records = groups.notify_end(self.ledger, self.experiment_id)
            driver.record_accounting(self.ledger, records, self._backend_for)
            groups.update_groups(self.ledger, self.experiment_id, records)


@contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """Ctrl-C (SIGINT), and the SIGTERM and SIGHUP the CLI treats as one (``options.stop_on_termination``),
    held back for the block (main thread only): yields whether one came."""
    import signal
    import threading

    came: list[object] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    held = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, lambda *_: came.append(True)) for signum in held}
    try:
        yield lambda: bool(came)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def load_any(
    spec: str | Path | Mapping[str, Any],
    sets: list[str] | None = None,
    seeds: int | None = None,
    backend: str | None = None,
) -> Spec:
    """A spec from its file, or from a mapping (a notebook's dict, validated exactly as a file is)."""
    if not isinstance(spec, Mapping):
        return load_spec(spec, sets=sets, seeds=seeds, backend=backend)
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory(prefix="orch-spec-") as tmp:
        path = Path(tmp) / "spec.yaml"
        path.write_text(yaml.safe_dump(dict(spec), sort_keys=False))
        try:
            loaded = load_spec(path, sets=sets, seeds=seeds, backend=backend)
        except InputError as err:
            raise InputError(err.message, SPEC_MAPPING if err.source == str(path) else err.source, err.field) from None
    loaded.source = SPEC_MAPPING
    return loaded


SPEC_MAPPING = "<spec mapping>"  # the source a spec given as a dict is named by, in errors and in MLflow


def plan_submission(
    spec_path: str | Path | Mapping[str, Any],
    seeds: int | None = None,
    backend: str | None = None,
    sets: list[str] | None = None,
    tracking_uri: str | None = None,
    cluster: str | None = None,
    max_parallel: int | None = None,
    ray_address: str | None = None,
) -> Submission:
    """Validate everything a submission needs; nothing is created yet (``--dry-run`` stops here)."""
    if cluster:
        sets = [*(sets or []), f"cluster={cluster}"]
    spec = load_any(spec_path, sets=sets, seeds=seeds, backend=backend)
    spec = backend_class(spec.backend).resolve_spec(spec, spec.set_paths)
    runs = expand(spec)
    if spec.tune is not None:  # `orch submit` ignores the section, but a typo in it is still a typo
        from orchestrator.tune.section import check_section

        check_section(spec)
    if max_parallel is not None and max_parallel < 1:
        raise InputError(f"expected at least 1, got {max_parallel}", "--max-parallel")
    submission = Submission(spec, runs, resolve_uri(tracking_uri, spec.tracking.uri), max_parallel, ray_address)
    submission.provenance.planned  # noqa: B018 - the code snapshot's limits, checked before anything is written
    return submission


def submit(
    spec_path: str | Path | Mapping[str, Any],
    seeds: int | None = None,
    backend: str | None = None,
    wait: bool = True,
    sink: follow.ProgressSink | None = None,
    **options: Any,
) -> Submission:
    """Every step of ``orch submit`` (a spec file or a mapping); follows the jobs to their end unless
    ``wait=False`` on a queueing backend (Slurm). The run statuses are in ``follow``'s result, the records
    in MLflow; ``runs(name)`` reads them back."""
    privacy.apply()  # the store and the jobs' files private to their owner (ORCH_UMASK to share with a group)
    submission = plan_submission(spec_path, seeds=seeds, backend=backend, **options)
    submission.reconcile()
    submission.launch()
    if submission.prepared and ((submission.backend is not None and submission.backend.blocking) or wait):
        submission.follow(sink)
    return submission


def run_in_process(
    spec_path: str | Path,
    seed: int = 0,
    variant: str | None = None,
    sets: list[str] | None = None,
    tracking_uri: str | None = None,
    started: Callable[[Run, str], None] | None = None,
    force: bool = False,
    on_failure: Callable[[BaseException], None] | None = None,
) -> tuple[Run, str, RunRecord]:
    """``orch run``: one run in this process (a debugger and print() work), recorded like any other.
    A seed that already FINISHED is refused: every reader counts one run per key. ``force`` runs it again
    and, once the new run finished, marks the old record superseded and deletes it from the experiment
    (MLflow keeps it in its trash), so the UI counts one run too. Returns the run, its final status and
    its MLflow record."""
    from orchestrator.job import worker

    spec = load_spec(spec_path, sets=sets)
    if spec.resources.world_size > 1:  # this process is one process: the ranks need a backend to start them
        raise InputError(
            f"orch run runs one process; this spec's run has {spec.resources.world_size} (nodes x "
            "tasks_per_node): use orch submit (the local backend starts its ranks on this machine)",
            spec.source,
            "resources.tasks_per_node",
        )
    runs = expand(spec.model_copy(update={"seeds": spec.seeds.model_copy(update={"count": 1, "base": seed})}))
    names = list(dict.fromkeys(r.variant for r in runs))
    chosen = variant or names[0]
    if chosen not in names:
        raise InputError(
            f"unknown variant '{chosen}'{did_you_mean(chosen, names)}; known: {', '.join(names)}", "--variant"
        )
    run = next(r for r in runs if r.variant == chosen)
    ledger = Ledger(resolve_uri(tracking_uri, spec.tracking.uri))
    experiment_id = ledger.experiment_id(spec.name, create=True)
    # scheme-1 runs matched in memory only: the params fallback of a full submit stays open to the rest
    attempts = by_key(rekey.adopt(ledger, experiment_id, [run], ledger.runs(experiment_id), write=False)).get(
        run.key, []
    )
    finished = [r for r in attempts if r.status == FINISHED]
    if finished and not force:
        raise InputError(
            f"seed {run.seed} of {run.label} already FINISHED (run {finished[0].run_id}); "
            "--force runs it again and supersedes that record",
            "--seed",
        )
    previous = next(iter(attempts), None)
    (prepared,) = driver.prepare(ledger, experiment_id, spec, [(run, previous)], "local", fresh=True)
    ledger.set_tags(prepared.run_id, {Tag.JOB_ID: "in-process", Tag.VIA: "orch run"})
    if started is not None:
        started(run, prepared.run_id)
    status = worker.execute(prepared.run_dir.path, on_failure=on_failure)
    ledger.ingest(prepared.run_dir)
    if status == FINISHED:
        for old in finished:
            ledger.set_tags(old.run_id, {Tag.SUPERSEDED_BY: prepared.run_id})
            ledger.client.delete_run(old.run_id)
    groups.update_groups(ledger, experiment_id)
    return run, status, ledger.get(prepared.run_id)


__all__ = [
    "ExperimentStatus",
    "ExperimentSummary",
    "Submission",
    "cancel",
    "compare",
    "created_folder",
    "deferred_interrupt",
    "delete_experiment",
    "experiment_name",
    "find_run",
    "list_experiments",
    "load_any",
    "open_experiment",
    "plan_submission",
    "reproduce",
    "run_in_process",
    "run_logs",
    "runs",
    "status",
    "submit",
    "sync",
]
