"""A backend in one module, registered through the ``orch.backends`` entry-point group and nothing else:
each run is a detached ``python -m orchestrator.job.worker RUN_DIR`` process, whose pid is its job id.
It overrides only the four required methods and one optional hook; every other hook keeps the base
class's default. Non-blocking, like Slurm: ``orch submit`` returns at once and ``orch status`` polls."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Any

from orchestrator.backends.base import DONE, LOST, RUNNING, Backend, Job, JobState
from orchestrator.job.journal import ended_last
from orchestrator.job.liveness import pid_alive
from orchestrator.job.rundir import RunDir


class DetachedBackend(Backend):
    name = "detached"
    blocking = False

    @classmethod
    def from_spec(cls, spec: Any, **options: Any) -> DetachedBackend:
        return cls()

    def describe(self) -> str | None:
        return "detached processes, one per run"

    def submit(self, run_dirs: list[RunDir]) -> list[str]:
        ids = []
        for run_dir in run_dirs:
            with open(run_dir.path / "detached.log", "ab") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "orchestrator.job.worker", str(run_dir.path)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            ids.append(str(proc.pid))
        return ids

    def poll(self, jobs: list[Job]) -> list[JobState]:
        states = []
        for job in jobs:
            if ended_last(job.run_dir.journal):  # first: an ended child not yet reaped still has its pid
                states.append(JobState(DONE))
            elif job.job_id.isdigit() and pid_alive(int(job.job_id)):
                states.append(JobState(RUNNING))
            else:
                states.append(JobState(LOST, "no process"))
        return states

    def cancel(self, jobs: list[Job]) -> None:
        for job in jobs:
            if job.job_id.isdigit():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(job.job_id), 15)  # the worker journals KILLED on SIGTERM
