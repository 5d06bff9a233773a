"""The Backend contract (submitit's Executor/Job split, reduced to what orch needs), and ``make``, the one
place that turns a backend's name into an instance.

A job runs ``python -m orchestrator.job.worker RUN_DIR`` (or the same function in a forked process) and
writes only its run directory; the orchestrator polls job states and ingests journals into MLflow."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from orchestrator.errors import InputError, did_you_mean
from orchestrator.job.rundir import RunDir
from orchestrator.spec.backends import BACKENDS, NAMES

if TYPE_CHECKING:
    from orchestrator.spec.spec import Spec

PENDING, RUNNING, DONE, LOST = "PENDING", "RUNNING", "DONE", "LOST"


@dataclass(frozen=True)
class JobState:
    state: str                 # PENDING | RUNNING | DONE (the process ended) | LOST (no trace of it left)
    reason: str | None = None  # how it ended, when the journal may not say (signal, OOM, node failure)


@dataclass(frozen=True)
class Job:
    job_id: str
    run_dir: RunDir


class Backend(Protocol):
    name: ClassVar[str]
    blocking: ClassVar[bool]  # True: jobs live only as long as the orchestrator process (local, ray)

    @classmethod
    def from_spec(cls, spec: Spec | None, **options: Any) -> Backend:
        """An instance for ``spec`` (its resources, its cluster), refusing what it can never run before
        anything is created. ``spec=None``: an instance that only polls and cancels jobs of earlier
        submissions (``orch status``, ``orch cancel``). Options it does not know are ignored."""
        ...

    def submit(self, run_dirs: list[RunDir]) -> list[str]:
        """Queue one job per run directory; return their job ids (in order)."""
        ...

    def poll(self, jobs: list[Job]) -> list[JobState]:
        """Current state of each job, including jobs submitted by an earlier orchestrator process."""
        ...

    def cancel(self, jobs: list[Job]) -> None:
        """Stop the jobs; a stopped job journals KILLED where it can."""
        ...


def check(name: str, source: str = "backend") -> None:
    """Refuse, before anything is submitted, a backend that does not exist."""
    if name not in BACKENDS:
        raise InputError(f"unknown backend '{name}'{did_you_mean(name, NAMES)}; expected one of: "
                         f"{', '.join(NAMES)}", source)


def backend_class(name: str) -> type[Backend]:
    check(name)
    module, _, attr = BACKENDS[name].partition(":")
    return cast("type[Backend]", getattr(importlib.import_module(module), attr))


def make(name: str, spec: Spec | None = None, **options: Any) -> Backend:
    """The backend ``name`` built for ``spec`` (or for polling and cancelling only, without one)."""
    return backend_class(name).from_spec(spec, **options)
