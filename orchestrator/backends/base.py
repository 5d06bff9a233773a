"""The Backend contract (submitit's Executor/Job split, reduced to what orch needs).

A job runs ``python -m orchestrator.worker RUN_DIR`` (or the same function in a forked process) and
writes only its run directory; the orchestrator polls job states and ingests journals into MLflow."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from orchestrator.rundir import RunDir

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
    name: str
    blocking: bool  # True: jobs live only as long as the orchestrator process (local backend)

    def submit(self, run_dirs: list[RunDir]) -> list[str]:
        """Queue one job per run directory; return their job ids (in order)."""

    def poll(self, jobs: list[Job]) -> list[JobState]:
        """Current state of each job, including jobs submitted by an earlier orchestrator process."""

    def cancel(self, jobs: list[Job]) -> None:
        """Stop the jobs; a stopped job journals KILLED where it can."""
