"""What runs inside a Ray task (imports no MLflow): the same worker as every other backend, one run or a pack
of ``runs_per_job`` runs, with ``time_min`` enforced in the task (Ray has no time limit of its own)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.job.pack import Pack
from orchestrator.job.rundir import RunDir, output_to


@contextmanager
def time_limit(seconds: int | None) -> Iterator[None]:
    """Raise ``Terminated`` in the run once ``seconds`` passed (the worker journals KILLED with the reason).
    A Ray task runs in its worker's main thread, where SIGALRM is delivered."""
    from orchestrator.job import worker

    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise worker.Terminated(f"time limit reached: resources.time_min={seconds / 60:g} (enforced by orch on Ray)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_in_task(path: str, time_limit_s: int | None = None) -> str:
    """Body of a Ray task: the same worker as every other backend. Returns the run's status."""
    from orchestrator.job import jobpath, worker

    jobpath.drop_working_directory()
    run_dir = RunDir(Path(path))
    with output_to(run_dir), time_limit(time_limit_s):
        return worker.execute(path)


def run_pack_in_task(paths: list[str], gpu_share: float, time_limit_s: int | None = None) -> str:
    """Body of a Ray task holding ``runs_per_job`` runs: one process each (job/pack.py), the task's GPUs
    shared between them; each run enforces the time limit itself."""
    return ",".join(Pack(paths, gpu_share, time_limit_s=time_limit_s).run())
