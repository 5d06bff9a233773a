"""Local backend: each run in its own process, at most ``max_parallel`` at a time.

Processes come from a forkserver that has imported the worker and the workload once, so a run costs a
fork (milliseconds), not a fresh interpreter importing numpy/torch (seconds), and starts clean of the
orchestrator's MLflow/sqlite state."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import DONE, LOST, PENDING, RUNNING, Backend, Job, JobState
from orchestrator.errors import InputError
from orchestrator.job.journal import last_event
from orchestrator.job.liveness import pid_alive, same_process, terminate_workers
from orchestrator.job.rundir import RunDir
from orchestrator.job.snapshot import PRELOAD_ENV
from orchestrator.vocabulary import Event

if TYPE_CHECKING:
    from orchestrator.spec.spec import Spec

TERMINATE_GRACE_S = 10.0


def local_gpus() -> int:
    """GPUs a local run can use: those CUDA_VISIBLE_DEVICES lists when set, else the NVIDIA driver's count
    (no torch import: it costs seconds)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    try:
        return len(list(Path("/proc/driver/nvidia/gpus").iterdir()))
    except OSError:
        return 0


def exit_reason(exitcode: int | None) -> str | None:
    if exitcode is None or exitcode >= 0:
        return None if not exitcode else f"worker exited with code {exitcode}"
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    return f"worker killed by {name}"


def start_forkserver_quietly() -> None:
    """Start the forkserver (if it is not running) with SIGINT ignored. It keeps that disposition across
    its exec, so a Ctrl-C while it imports the workload (seconds, for torch) prints no KeyboardInterrupt
    traceback from it (multiprocessing ignores SIGINT there only once its imports are done), and its
    children start with SIGINT ignored until ``worker.child_main`` turns it into a KeyboardInterrupt.
    A Ctrl-C to orch in the few milliseconds of the spawn itself is lost: the user presses it again."""
    import threading
    from multiprocessing import forkserver

    previous = signal.getsignal(signal.SIGINT) if threading.current_thread() is threading.main_thread() else None
    if previous is None:  # not the main thread, or a handler not set from Python (it could not be put back)
        forkserver.ensure_running()
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _main_not_rerun() -> Iterator[None]:
    """A run's process is a fork of the forkserver, running orch's worker: it needs nothing from the parent's
    ``__main__``. multiprocessing would still re-run the parent's main script in each (as ``__mp_main__``):
    the `orch` script (~80 ms a run), or a user's script that calls ``orch.submit`` without an
    ``if __name__ == "__main__":`` guard, which would then submit again from inside its own run and wait
    forever for the submit lock its parent holds. So the processes orch starts are told no main to re-run."""
    from multiprocessing import spawn

    original = spawn.get_preparation_data

    def without_main(name: str) -> dict[str, Any]:
        data = original(name)
        data.pop("init_main_from_path", None)
        data.pop("init_main_from_name", None)
        return data

    spawn.get_preparation_data = without_main
    try:
        yield
    finally:
        spawn.get_preparation_data = original


def _forkserver_started() -> bool:
    from multiprocessing import forkserver

    return forkserver._forkserver._forkserver_pid is not None  # type: ignore[attr-defined]


class LocalBackend(Backend):
    name = "local"
    blocking = True
    starts_before_recording = True

    def __init__(self, max_parallel: int, env: dict[str, str] | None = None, world_size: int = 1):
        self.max_parallel = max(1, max_parallel)
        self.world_size = world_size  # > 1: each run is that many ranks on this machine (job/ranks.py)
        self.host = socket.gethostname()
        self.job_id = f"{self.host}:{os.getpid()}"
        for name, value in (env or {}).items():
            os.environ[name] = value  # inherited by the forkserver when it starts, before numpy loads
        self._mp = multiprocessing.get_context("forkserver")
        # job.preload: the main script, the workload from the submission's snapshot, and what every run
        # needs, imported once by the forkserver (its docstring)
        self._mp.set_forkserver_preload(
            ["orchestrator.job.jobpath", "orchestrator.job.worker", "orchestrator.job.preload"]
        )
        self._queue: deque[RunDir] = deque()
        self._procs: dict[str, multiprocessing.process.BaseProcess] = {}
        self._skipped: dict[str, str] = {}  # queued runs cancelled before they started: path -> reason
        # The queue and the processes are shared with the launcher thread (``_launch_queued``). Every look
        # at a process goes through this lock too: two threads reading one forkserver sentinel at once
        # would split its exit status between them.
        self._lock = threading.RLock()
        self._launcher: threading.Thread | None = None

    @classmethod
    def resolve_spec(cls, spec: Spec, set_paths: list[str]) -> Spec:
        """Runs on this machine: a request it can never meet is refused now, not queued forever.
        ``--cluster`` only means something to a cluster backend."""
        cores = os.cpu_count() or 1
        resources = spec.resources
        if resources.nodes > 1:
            raise InputError(
                f"nodes: {resources.nodes}, but the local backend runs on this one machine: nodes: 1 with "
                f"tasks_per_node: {resources.world_size} runs the same ranks here (or --backend slurm / ray)",
                spec.source,
                "resources.nodes",
            )
        if resources.cpus * resources.layout > cores:
            per = f" x tasks_per_node {resources.layout}" if resources.layout > 1 else ""
            raise InputError(
                f"{resources.cpus} cores per run{per}, but this machine has {cores} (backend local)",
                spec.source,
                "resources.tasks_per_node" if per else "resources.cpus",
            )
        gpus = local_gpus()
        if resources.gpus_per_node > gpus:
            raise InputError(
                f"gpus_per_node: {resources.gpus_per_node}, but this machine has {gpus} (backend local)",
                spec.source,
                "resources.gpus_per_node",
            )
        if spec.resources.gpus > gpus:
            raise InputError(
                f"{spec.resources.gpus:g} GPUs per run, but this machine has {gpus} (backend local)",
                spec.source,
                "resources.gpus",
            )
        if "cluster" in set_paths:
            raise InputError(
                f"a cluster profile ('{spec.cluster}') is for the slurm backend; this spec runs on "
                "local: add --backend slurm",
                "--cluster",
            )
        return spec

    @classmethod
    def from_spec(cls, spec: Spec | None, max_parallel: int | None = None, **_: Any) -> LocalBackend:
        """Concurrency = cores // resources.cpus unless ``max_parallel``; each run's torch/BLAS pools sized
        to its cpus; the workload imported once in the forkserver."""
        cpus = spec.resources.cpus if spec else 1
        tasks = spec.resources.layout if spec else 1
        parallel = max_parallel or max(1, (os.cpu_count() or 1) // (cpus * tasks))
        threads = {v: str(cpus) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
        return cls(parallel, env=threads, world_size=tasks)  # the workload: preloaded from the first run's snapshot

    def submit(self, run_dirs: list[RunDir]) -> list[str]:
        with self._lock:
            self._queue.extend(run_dirs)
            self._fill()
            if self._queue and (self._launcher is None or not self._launcher.is_alive()):
                self._launcher = threading.Thread(target=self._launch_queued, name="orch-launcher", daemon=True)
                self._launcher.start()
        return [self.job_id] * len(run_dirs)

    def _launch_queued(self) -> None:
        """Start queued runs as soon as slots free up, on a thread of its own: the orchestrator is busy
        meanwhile (importing MLflow, recording the runs it just started, ingesting the ended ones), and
        short runs would otherwise wait for it. Ends when the queue is empty; ``poll`` fills slots too.

        It also ends when a worker exits interrupted: a terminal's Ctrl-C reaches the workers with the
        orchestrator, whose handler then cancels the queue. A slot refilled in between would start a run
        only to kill it before its first checkpoint, and its resubmission would then need a second MLflow
        run. A worker interrupted on its own (``kill -INT``) leaves the filling to ``poll``."""
        from multiprocessing.connection import wait

        from orchestrator.job.worker import INTERRUPTED_EXIT

        while True:
            with self._lock:
                if any(p.exitcode == INTERRUPTED_EXIT for p in self._procs.values()):
                    return
                self._fill()
                if not self._queue:
                    return
                sentinels = [p.sentinel for p in self._procs.values() if p.exitcode is None]
            wait(sentinels, 0.05)

    def _fill(self) -> None:
        running = sum(1 for p in self._procs.values() if p.is_alive())
        if self._queue and running < self.max_parallel:
            if _forkserver_started():
                start_forkserver_quietly()  # restarts one that died
            else:
                self.warm(self._warm_job())
        while self._queue and running < self.max_parallel:
            from orchestrator.job.worker import child_main

            run_dir = self._queue.popleft()
            # `orch cancel` runs in another process than this queue's: all it can do to a queued run is
            # leave a marker in its run directory (and journal its end), so look before forking. A marker
            # rather than "the journal has an end": a resumed run's journal holds its earlier attempt's end.
            reason = run_dir.cancelled() or (
                None
                if run_dir.spec_file.exists()
                else f"its run directory {run_dir.path} was deleted while it was queued"
            )
            if reason is not None:
                self._skipped[str(run_dir.path)] = reason
                continue
            if self.world_size > 1:  # one supervisor forking the run's ranks (job/ranks.py)
                from orchestrator.job.ranks import group_main

                proc = self._mp.Process(target=group_main, args=(str(run_dir.path), self.world_size), daemon=False)
            else:
                proc = self._mp.Process(target=child_main, args=(str(run_dir.path),), daemon=False)
            with _main_not_rerun():
                proc.start()
            self._procs[str(run_dir.path)] = proc
            running += 1

    def _warm_job(self) -> dict[str, Any]:
        """The first queued run's job description, for the forkserver to preload its workload; {} when its
        run directory was deleted meanwhile (that run is then skipped, with its reason, by ``_fill``)."""
        try:
            return self._queue[0].load().model_dump()
        except (OSError, ValueError):
            return {}

    def warm(self, job: dict[str, Any]) -> None:
        """Start the forkserver now, importing the workload of ``job`` (run.json's code fields) from its
        snapshot once (job/preload.py); it does so in its own process, while the orchestrator goes on
        creating the MLflow runs. A forkserver already running is left as it is."""
        if not _forkserver_started():
            os.environ[PRELOAD_ENV] = json.dumps({"module": job.get("module"), "code": job.get("code")})
        try:
            start_forkserver_quietly()
        finally:
            os.environ.pop(PRELOAD_ENV, None)  # the forkserver's alone, not every process started after it

    def poll(self, jobs: list[Job]) -> list[JobState]:
        """The jobs' states; slots freed by the runs that ended are refilled before returning, so that the
        next runs start while the orchestrator ingests the ended ones."""
        with self._lock:
            return self._poll(jobs)

    def _poll(self, jobs: list[Job]) -> list[JobState]:
        queued = {str(r.path) for r in self._queue}
        states = []
        for job in jobs:
            path = str(job.run_dir.path)
            proc = self._procs.get(path)
            if path in queued:
                states.append(JobState(PENDING))
            elif path in self._skipped:
                states.append(JobState(DONE, self._skipped[path]))
            elif proc is not None:
                states.append(JobState(RUNNING) if proc.is_alive() else JobState(DONE, exit_reason(proc.exitcode)))
            else:
                states.append(self._foreign(job))
        self._fill()
        return states

    def wait(self, timeout: float) -> None:
        """Sleep until one of our workers ends or ``timeout`` passes (``driver.follow`` between polls): a
        freed slot is refilled at once instead of at the next tick, which bounded short runs."""
        from multiprocessing.connection import wait

        with self._lock:
            sentinels = [p.sentinel for p in self._procs.values() if p.exitcode is None]
        if sentinels:
            wait(sentinels, timeout)
        else:
            time.sleep(timeout)

    def _foreign(self, job: Job) -> JobState:
        """A job of an earlier orchestrator process: judge by its worker's and its driver's pids."""
        host, _, driver_pid = job.job_id.rpartition(":")
        if host != self.host:
            return JobState(RUNNING, f"on host {host}: cannot check from {self.host}")
        start = last_event(job.run_dir.journal, Event.START)
        worker_pid = start["pid"] if start else None
        if start is not None and same_process(start["pid"], start["t"]):  # not a reused pid
            return JobState(RUNNING)
        if (
            driver_pid.isdigit()
            and int(driver_pid) != os.getpid()
            and pid_alive(int(driver_pid))
            and worker_pid is None
        ):
            return JobState(PENDING)
        return JobState(LOST, "the orchestrator or the worker process died before the run ended")

    def cancel(self, jobs: list[Job]) -> None:
        """Queued runs are marked first, so the process that queued them never starts them (``_fill``);
        then running workers are sent SIGTERM (ours as children, an earlier submission's by their pid).
        A worker that forked between the mark and the pid lookup sees the mark itself (worker.execute)."""
        for job in jobs:
            job.run_dir.mark_cancelled("cancelled before it started")
        paths = {str(job.run_dir.path) for job in jobs}
        with self._lock:
            self._queue = deque(r for r in self._queue if str(r.path) not in paths)
            victims = [p for path, p in self._procs.items() if path in paths and p.is_alive()]
            self._kill(victims)
            ours = set(self._procs)
        terminate_workers([job.run_dir.journal for job in jobs if str(job.run_dir.path) not in ours], TERMINATE_GRACE_S)

    @staticmethod
    def _kill(victims: list[multiprocessing.process.BaseProcess]) -> None:
        for proc in victims:
            proc.terminate()  # SIGTERM: the worker journals KILLED
        deadline = time.monotonic() + TERMINATE_GRACE_S
        for proc in victims:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                proc.kill()
                proc.join()
