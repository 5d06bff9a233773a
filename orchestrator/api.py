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

import json
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator import driver, privacy, rekey
from orchestrator.backends.base import Backend, Job, backend_class
from orchestrator.backends.base import make as make_backend
from orchestrator.errors import InputError, did_you_mean
from orchestrator.job.rundir import RunDir
from orchestrator.provenance import Provenance
from orchestrator.spec.plan import Run, expand
from orchestrator.spec.spec import Spec, load_spec, load_yaml
from orchestrator.spec.tracking_uri import sqlite_path
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.lock import SubmitLock, submit_lock
from orchestrator.tracking.records import ACTIVE, FINISHED, Role, RunRecord, Tag, by_key
from orchestrator.tracking.uri import resolve_uri

if TYPE_CHECKING:  # the analysis modules are imported where they are used
    import pandas

    from orchestrator.analysis.compare import Report
    from orchestrator.analysis.status import GroupStatus, SweepStatus
    from orchestrator.reproduce import Reproduction


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
        self.backend = make_backend(self.spec.backend, self.spec, max_parallel=self.max_parallel,
                                    ray_address=self.ray_address)
        # Held until launch() handed the runs to the backend: another submit of this experiment waits, then
        # finds them queued instead of creating them twice (orchestrator/tracking/lock.py).
        if not self._experiment_exists():  # a new experiment runs everything: refused before the store is touched
            self.backend.check_submission(len(self.runs))
        self.lock = submit_lock(self.spec.name, self.uri, self.spec.workdir).acquire()
        try:
            self.ledger = Ledger(self.uri)
            # created in launch(), once it is sure to run something (and, locally, once its runs started)
            self.experiment_id = self.ledger.experiment_id(self.spec.name) or ""
            backend = self.backend
            records = driver.refresh(self.ledger, self.ledger.runs(self.experiment_id) if self.experiment_id else [],
                                     lambda name: backend if name == self.spec.backend else make_backend(name))
            if self.experiment_id:  # runs recorded under key scheme 1 get scheme-2 keys: found, not rerun
                records = rekey.adopt(self.ledger, self.experiment_id, self.runs, records)
            self.reconciled = driver.reconcile(self.runs, records)
            if self.reconciled.drifted:
                driver.mark_defaults(self.ledger, self.experiment_id, self.reconciled.done)
            self.backend.check_submission(len(self.reconciled.todo))  # before launch() makes runs and directories
        except BaseException:
            self.lock.release()
            raise
        return self.reconciled

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
        return driver.reconcile(self.runs, rekey.adopt(ledger, experiment_id, self.runs, ledger.runs(experiment_id),
                                                       write=False))

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
                    self.prepared = driver.prepare(self.ledger, self.experiment_id, self.spec, self.reconciled.todo,
                                                   self.spec.backend, job_id=self.backend.job_id,
                                                   code=self.provenance)
                    self.job_ids = self.backend.submit([p.run_dir for p in self.prepared])
                    driver.record_job_ids(self.ledger, self.prepared, self.job_ids)
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
            self.prepared = driver.write_run_dirs(self.spec, decided, self.ledger.uri, self.provenance.job_fields(),
                                                  job_id)
            self.job_ids = self.backend.submit([p.run_dir for p in self.prepared])
            jobs = [Job(job_id, p.run_dir) for p in self.prepared]
            try:
                self.experiment_id = self.ledger.experiment_id(self.spec.name, create=True)
                driver.record_runs(self.ledger, self.experiment_id, self.spec, decided, self.spec.backend, job_id,
                                   self.provenance, keep_ids=True)
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

    def follow(self, sink: driver.ProgressSink | None = None) -> dict[str, str]:
        """Until every launched job ended: run id -> final status. Ctrl-C: see ``driver.follow``."""
        assert self.ledger is not None and self.backend is not None, "launch() first"
        try:
            return driver.follow(self.ledger, self.backend, self.prepared, sink)
        finally:
            driver.update_groups(self.ledger, self.experiment_id)


@contextmanager
def deferred_interrupt() -> Iterator[Callable[[], bool]]:
    """SIGINT held back for the block (main thread only): yields whether one came."""
    import signal
    import threading
    came: list[object] = []
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, lambda *_: came.append(True))
    try:
        yield lambda: bool(came)
    finally:
        signal.signal(signal.SIGINT, previous)


def load_any(spec: str | Path | Mapping[str, Any], sets: list[str] | None = None, seeds: int | None = None,
             backend: str | None = None) -> Spec:
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


def plan_submission(spec_path: str | Path | Mapping[str, Any], seeds: int | None = None, backend: str | None = None,
                    sets: list[str] | None = None, tracking_uri: str | None = None, cluster: str | None = None,
                    max_parallel: int | None = None, ray_address: str | None = None) -> Submission:
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


def submit(spec_path: str | Path | Mapping[str, Any], seeds: int | None = None, backend: str | None = None,
           wait: bool = True, sink: driver.ProgressSink | None = None, **options: Any) -> Submission:
    """Every step of ``orch submit`` (a spec file or a mapping); follows the jobs to their end unless
    ``wait=False`` on a queueing backend (Slurm). The run statuses are in ``follow``'s result, the records
    in MLflow; ``runs(name)`` reads them back."""
    privacy.apply()  # the store and the jobs' files private to their owner (ORCH_UMASK to share with a group)
    submission = plan_submission(spec_path, seeds=seeds, backend=backend, **options)
    submission.reconcile()
    submission.launch()
    if submission.prepared and (submission.backend is not None and submission.backend.blocking or wait):
        submission.follow(sink)
    return submission


def run_in_process(spec_path: str | Path, seed: int = 0, variant: str | None = None, sets: list[str] | None = None,
                   tracking_uri: str | None = None, started: Callable[[Run, str], None] | None = None,
                   force: bool = False,
                   on_failure: Callable[[BaseException], None] | None = None) -> tuple[Run, str, RunRecord]:
    """``orch run``: one run in this process (a debugger and print() work), recorded like any other.
    A seed that already FINISHED is refused: every reader counts one run per key. ``force`` runs it again
    and, once the new run finished, marks the old record superseded and deletes it from the experiment
    (MLflow keeps it in its trash), so the UI counts one run too. Returns the run, its final status and
    its MLflow record."""
    from orchestrator.job import worker

    spec = load_spec(spec_path, sets=sets)
    runs = expand(spec.model_copy(update={"seeds": spec.seeds.model_copy(update={"count": 1, "base": seed})}))
    names = list(dict.fromkeys(r.variant for r in runs))
    chosen = variant or names[0]
    if chosen not in names:
        raise InputError(f"unknown variant '{chosen}'{did_you_mean(chosen, names)}; known: {', '.join(names)}", "--variant")
    run = next(r for r in runs if r.variant == chosen)
    ledger = Ledger(resolve_uri(tracking_uri, spec.tracking.uri))
    experiment_id = ledger.experiment_id(spec.name, create=True)
    # scheme-1 runs matched in memory only: the params fallback of a full submit stays open to the rest
    attempts = by_key(rekey.adopt(ledger, experiment_id, [run], ledger.runs(experiment_id), write=False)).get(run.key, [])
    finished = [r for r in attempts if r.status == FINISHED]
    if finished and not force:
        raise InputError(f"seed {run.seed} of {run.label} already FINISHED (run {finished[0].run_id}); "
                         "--force runs it again and supersedes that record", "--seed")
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
    driver.update_groups(ledger, experiment_id)
    return run, status, ledger.get(prepared.run_id)


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
        return {"experiment": self.name, "groups": [g.to_dict() for g in self.groups],
                "sweeps": [s.to_dict() for s in self.sweeps]}


def status(experiment: str, tracking_uri: str | None = None, where: str | None = None) -> ExperimentStatus:
    """Runs brought up to date (journals ingested, dead jobs closed), then counted per group and per sweep;
    with ``where`` (``params.noise > 0.1 and variant = low``), only the matching groups and their runs."""
    from orchestrator.analysis.status import experiment_status, sweep_status
    ledger, experiment_id, name = open_experiment(experiment, tracking_uri)
    records = driver.refresh(ledger, ledger.runs(experiment_id), make_backend)
    parents = driver.update_groups(ledger, experiment_id, records)
    if where:
        from orchestrator.analysis.compare import group_parents
        kept = {p.data.tags.get(Tag.GROUP) for p in group_parents(ledger, experiment_id, where)}
        parents = [p for p in parents if p.tags.get(Tag.GROUP) in kept]
        records = [r for r in records if r.tags.get(Tag.GROUP) in kept]
    return ExperimentStatus(name, experiment_status(ledger, experiment_id, records, parents),
                            [] if where else sweep_status(ledger, experiment_id), records)


def find_run(ledger: Ledger, run: str) -> RunRecord:
    """A run by MLflow run id, by orch key (as printed by --dry-run and status) or by scheduler job id."""
    from mlflow.exceptions import MlflowException
    if not re.fullmatch(r"[\w.:\-]{1,200}", run):  # it goes into an MLflow filter string: nothing that could quote
        raise InputError(f"{run!r} is not a run id, key or job id (letters, digits, '_', '.', ':', '-')", "RUN")
    if len(run) == 32:
        try:
            return ledger.get(run)
        except MlflowException:
            pass
    experiments = [e.experiment_id for e in ledger.client.search_experiments()]
    for tag in (Tag.KEY, Tag.JOB_ID):
        found = ledger.client.search_runs(experiments, filter_string=f"tags.`{tag}` = '{run}'", max_results=1)
        if found:
            return ledger.get(found[0].info.run_id)
    raise InputError(f"no run with id or key '{run}' in {ledger.uri}")


def run_logs(run: str, tracking_uri: str | None = None) -> tuple[RunRecord, RunDir, list[Path]]:
    """A run's record, its run directory and its log files: stdout, stderr, then the scheduler's own."""
    ledger = Ledger(resolve_uri(tracking_uri), create=False)
    record = find_run(ledger, run)
    if not record.tags.get(Tag.RUN_DIR):  # a group, a sweep or a comparison: no process, no logs of its own
        role = record.tags.get(Tag.ROLE, "run")
        experiment_id = ledger.client.get_run(record.run_id).info.experiment_id
        seeds = [r for r in ledger.runs(experiment_id) if r.tags.get(Tag.GROUP) == record.tags.get(Tag.GROUP)] \
            if role == Role.GROUP else []
        listed = ", ".join(f"{r.run_id} (seed {r.tags.get(Tag.SEED, '?')}, {r.status})" for r in seeds[:10])
        raise InputError(f"{run} is a {role} run, with no logs of its own" +
                         (f"; its seeds: {listed}: orch logs SEED_RUN_ID" if listed else
                          "; orch status EXPERIMENT --runs lists the seed runs"), "RUN")
    run_dir = RunDir(Path(record.tags[Tag.RUN_DIR]))
    try:  # Slurm: what happened before and after Python ran
        scheduler = [Path(p) for p in json.loads(run_dir.scheduler_record.read_text()).get("logs", [])]
    except (OSError, ValueError):
        scheduler = []
    return record, run_dir, [run_dir.stdout, run_dir.stderr, *scheduler]


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
    driver.update_groups(ledger, experiment_id)
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
        uri = tracking_uri or run_dir.load().get("tracking_uri") or resolve_uri(None)
        ledger = ledgers.setdefault(uri, Ledger(uri))
        before = run_dir.read_cursor().get("offset", 0)
        ended = ledger.ingest(run_dir)
        moved = run_dir.read_cursor().get("offset", 0) != before
        counts["ingested"] += moved
        counts["ended"] += bool(ended and moved)  # ended by these lines, not already recorded
    return counts


def compare(experiment: str, metric: str | None = None, mode: str | None = None, baseline: str | None = None,
            by: list[str] | None = None, alpha: float = 0.05, curve: str | None = None, log: bool = True,
            out: Path | None = None, tracking_uri: str | None = None, where: str | None = None,
            test: str = "t") -> Report:
    """Do the groups differ across seeds? The report (statistics, tests, verdicts); with ``log`` it is also
    logged to MLflow with its plots, with ``out`` kept in that folder too. ``test``: "t" (paired t-test on
    shared seeds, else Welch's) or "permutation" (Fisher's randomization test, else the permutation test)."""
    import tempfile

    from orchestrator.analysis import report as report_files
    from orchestrator.analysis.compare import log_to_mlflow, run_compare

    name, spec_uri = experiment_name(experiment)
    ledger = Ledger(resolve_uri(tracking_uri, spec_uri), create=False)
    result = run_compare(ledger, name, metric=metric, mode=mode, baseline=baseline, by=by, alpha=alpha, curve=curve,
                         where=where, test=test)
    with tempfile.TemporaryDirectory(prefix="orch-compare-") as tmp:
        files = out or Path(tmp)
        if log or out:  # the plots cost a matplotlib import: only when they go somewhere
            report_files.write(result, files)
        if log:
            log_to_mlflow(ledger, result, files)
            (files / "compare.json").write_text(json.dumps(result.to_dict(), indent=1))
    return result


# -- the store's experiments -------------------------------------------------------------------------
@dataclass
class ExperimentSummary:
    name: str
    runs: int                  # seed runs (attempts), all statuses
    groups: int
    finished: int              # run keys with a FINISHED attempt
    last_activity: float | None  # seconds since the epoch: the latest run start


def list_experiments(tracking_uri: str | None = None) -> list[ExperimentSummary]:
    """``orch ls``: the store's experiments with orch runs, most recently active first."""
    from orchestrator.tracking.records import FINISHED, Role, latest_per_key
    ledger = Ledger(resolve_uri(tracking_uri), create=False)
    out = []
    for experiment in ledger.client.search_experiments():
        seeds = ledger.runs(experiment.experiment_id)
        groups = ledger.runs(experiment.experiment_id, role=Role.GROUP)
        if not seeds and not groups:
            continue
        starts = [r.start_time for r in seeds + groups if r.start_time]
        out.append(ExperimentSummary(experiment.name, len(seeds), len(groups),
                                     sum(r.status == FINISHED for r in latest_per_key(seeds)),
                                     max(starts) / 1000 if starts else None))
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


__all__ = ["Submission", "list_experiments", "delete_experiment", "plan_submission", "submit", "run_in_process", "status",
           "runs", "reproduce", "find_run", "run_logs", "cancel", "sync", "compare", "open_experiment", "experiment_name"]
