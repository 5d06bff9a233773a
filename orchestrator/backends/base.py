"""The Backend contract (submitit's Executor/Job split, reduced to what orch needs), and ``make``, the one
place that turns a backend's name into an instance.

A job runs ``python -m orchestrator.job.worker RUN_DIR`` (or the same function in a forked process) and
writes only its run directory; the orchestrator polls job states and ingests journals into MLflow."""

from __future__ import annotations

import importlib
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, cast

from orchestrator.errors import InputError
from orchestrator.job.rundir import RunDir
from orchestrator.spec.backends import backends, check
from orchestrator.vocabulary import JobPhase

if TYPE_CHECKING:
    from orchestrator.spec.spec import Spec

PENDING, RUNNING, DONE, LOST = JobPhase.PENDING, JobPhase.RUNNING, JobPhase.DONE, JobPhase.LOST  # vocabulary.py


@dataclass(frozen=True)
class JobState:
    state: str  # PENDING | RUNNING | DONE (the process ended) | LOST (no trace of it left)
    reason: str | None = None  # how it ended, when the journal may not say (signal, OOM, node failure)


@dataclass(frozen=True)
class Job:
    job_id: str
    run_dir: RunDir


class Backend(ABC):
    """What a backend is. ``from_spec``, ``submit``, ``poll`` and ``cancel`` are required; every other hook
    has a default that does nothing (Ray Tune's ``TrialScheduler`` style), so a backend overrides only what
    it needs. A backend is found by name (``orchestrator/spec/backends.py``): built in, or registered by an
    installed package in the ``orch.backends`` entry-point group."""

    name: ClassVar[str]
    blocking: ClassVar[bool]  # True: jobs live only as long as the orchestrator process (local, ray)
    # True: submit() may run before the MLflow records exist (local on an sqlite store: short runs need not
    # wait for MLflow's import and the records' creation; api.Submission records them right after)
    starts_before_recording: ClassVar[bool] = False
    # The job id every run of this submission gets when it is known before submit() (local: host:pid);
    # "" when the scheduler gives one per job (submit's return value)
    job_id: str = ""

    # -- before any instance: the spec as this backend runs it ----------------------------------------
    @classmethod
    def resolve_spec(cls, spec: Spec, set_paths: list[str]) -> Spec:
        """The spec completed with this backend's settings, or refused (``InputError``) when this backend
        can never run it; ``set_paths``: the fields ``--set`` / ``--cluster`` gave. Creates nothing."""
        return spec

    @classmethod
    def preview(cls, spec: Spec, n_runs: int) -> str | None:
        """What ``orch submit --dry-run`` shows beyond the plan (Slurm: the job scripts); queues nothing."""
        return None

    @classmethod
    @abstractmethod
    def from_spec(cls, spec: Spec | None, **options: Any) -> Backend:
        """An instance for ``spec`` (its resources, its cluster), refusing what it can never run before
        anything is created. ``spec=None``: an instance that only polls and cancels jobs of earlier
        submissions (``orch status``, ``orch cancel``). Options it does not know are ignored."""

    # -- a submission ----------------------------------------------------------------------------------
    def describe(self) -> str | None:
        """One line ``orch submit`` prints once the backend is made (Slurm: which profile file it read)."""
        return None

    def check_submission(self, n_runs: int) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Refuse (``InputError``) a submission of ``n_runs`` runs before anything is created (Slurm: the
        profile's job limit)."""

    def warm(self, job: dict[str, Any]) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Get ready while the orchestrator creates the runs (local: a forkserver importing the workload
        from the snapshot); ``job``: the fields every run.json of this submission shares."""

    @abstractmethod
    def submit(self, run_dirs: list[RunDir]) -> list[str]:
        """Queue one job per run directory; return their job ids (in order)."""

    @abstractmethod
    def poll(self, jobs: list[Job]) -> list[JobState]:
        """Current state of each job, including jobs submitted by an earlier orchestrator process."""

    def wait(self, timeout: float) -> None:
        """Block until a job may have changed state, at most ``timeout`` seconds (local: woken by a job's
        end)."""
        time.sleep(timeout)

    def accounting(self, jobs: list[Job]) -> dict[str, dict[str, str]]:
        """The scheduler's record of ended jobs (job id -> field -> value: ``elapsed``, ``state``,
        ``exit_code``, ``nodes``, ``alloc_tres``, ``max_rss``), for the jobs it still knows; empty by default."""
        return {}

    @abstractmethod
    def cancel(self, jobs: list[Job]) -> None:
        """Stop the jobs; a stopped job journals KILLED where it can."""


def backend_class(name: str) -> type[Backend]:
    """The class of backend ``name``; a registered one that cannot be imported or is not a Backend is
    refused, naming its entry point."""
    check(name)
    path = backends()[name]
    module, _, attr = path.partition(":")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as err:
        raise InputError(f"backend '{name}' ({path}) cannot be imported: {err}", "backend") from None
    if not (isinstance(found, type) and issubclass(found, Backend)):
        raise InputError(
            f"backend '{name}' ({path}) is not a subclass of orchestrator.backends.base.Backend", "backend"
        )
    return cast("type[Backend]", found)


def make(name: str, spec: Spec | None = None, **options: Any) -> Backend:
    """The backend ``name`` built for ``spec`` (or for polling and cancelling only, without one)."""
    return backend_class(name).from_spec(spec, **options)
