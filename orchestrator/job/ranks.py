"""A multi-task run on one machine (the local backend): its ranks as child processes of one supervisor.

The local backend starts ``group_main`` where it would start a one-process run's worker. It forks one process
per rank, each running the ordinary worker with the torchrun environment (``job/dist.py``: MASTER_ADDR is the
loopback, MASTER_PORT a port free now), and waits for them. A rank that dies without a word (SIGKILL, the OOM
killer) gets its end written for it, so rank 0 names it as the cause; the ranks still running once one failed
have ``GRACE_S`` to notice (their next collective fails) before they are stopped, so nothing hangs. When rank 0
itself could not journal the run's end, the supervisor does. A cancel's SIGTERM is passed to every rank; a
terminal's Ctrl-C reaches the ranks directly (one process group), the supervisor only waits for them."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import time
import uuid
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from orchestrator.job import dist
from orchestrator.job.journal import FAILED, FINISHED, JournalWriter, ended_last, last_event
from orchestrator.job.rundir import RunDir
from orchestrator.vocabulary import Event

GRACE_S = 10.0  # after a rank failed: how long the others have to end on their own before SIGTERM, then SIGKILL


def exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


def _die_with_parent() -> None:
    """Linux: the kernel SIGKILLs this rank when its supervisor dies, however it dies (a SIGKILL after a
    cancel's grace included), so no rank trains on alone holding its cores and its GPU."""
    import contextlib
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):  # not Linux: the supervisor's own stop is all there is
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _rank_main(path: str, environ: dict[str, str], supervisor: int) -> None:
    from orchestrator.job.worker import child_main

    _die_with_parent()
    if os.getppid() != supervisor:  # it died between the fork and the prctl
        os._exit(1)
    os.environ.update(environ)
    os.environ[dist.SUPERVISOR_ENV] = str(supervisor)  # rank 0's system metrics sample every rank under it
    child_main(path)


class Group:
    """The ranks of one run on this machine, started and watched."""

    def __init__(self, path: str, world_size: int):
        self.path = path
        self.run_dir = RunDir(Path(path))
        self.layout = dist.local_layout(world_size, dist.free_port(), uuid.uuid4().hex[:12])
        self.procs: dict[int, Any] = {}
        self.failed_at: float | None = None

    def start(self) -> None:
        context = multiprocessing.get_context("fork")  # a fork of this process: the workload is imported already
        for env in self.layout:
            proc = context.Process(target=_rank_main, args=(self.path, env.environ(), os.getpid()), daemon=False)
            proc.start()
            self.procs[env.rank] = proc

    def signal_all(self, signum: int) -> None:
        for proc in self.procs.values():
            if proc.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)

    def wait(self) -> int:
        """Wait for every rank; return rank 0's exit code."""
        stopped = killed = False
        while any(p.is_alive() for p in self.procs.values()):
            wait([p.sentinel for p in self.procs.values() if p.is_alive()], 0.5)
            self._note_failures()
            late = self.failed_at is not None and time.monotonic() - self.failed_at
            if late and late > GRACE_S and not stopped:
                self.signal_all(signal.SIGTERM)
                stopped = True
            if late and late > 2 * GRACE_S and not killed:
                self.signal_all(signal.SIGKILL)
                killed = True
        self._note_failures()
        self._close_run()
        return int(self.procs[0].exitcode or 0)

    def _note_failures(self) -> None:
        for rank, proc in self.procs.items():
            if proc.exitcode in (None, 0):
                continue
            if self.failed_at is None:
                self.failed_at = time.monotonic()
            env = self.layout[rank]
            if rank > 0 and not dist.end_file(self.run_dir, env.token, rank).exists():
                dist.report_end(self.run_dir, env, FAILED, f"rank {rank} {exit_reason(proc.exitcode)}")

    def _close_run(self) -> None:
        close_unended(self.run_dir, self.layout[0], f"rank 0 {exit_reason(self.procs[0].exitcode)}")


def close_unended(run_dir: RunDir, rank0: dist.DistEnv, why: str) -> None:
    """Rank 0 died before journaling the run's end (SIGKILL, a lost Ray worker): journal it for it, naming the
    first rank that failed. A run whose journal ended, or last journaled a requeue, is left as it is."""
    if not run_dir.journal.exists() or ended_last(run_dir.journal):
        return
    records = [e for e in (last_event(run_dir.journal, Event.START), last_event(run_dir.journal, Event.REQUEUE)) if e]
    if records and max(records, key=lambda e: e["t"])["event"] == Event.REQUEUE:
        return
    failure = dist.first_failure(dist.peer_ends(run_dir, rank0))
    error = f"rank {failure['rank']}: {failure.get('error')} ({why})" if failure else why
    journal = JournalWriter(run_dir.journal)
    fields: dict[str, Any] = {"traceback": failure["traceback"]} if failure and failure.get("traceback") else {}
    journal.write(Event.END, status=FAILED, final={}, error=error, **fields)
    journal.close()


def group_main(path: str, world_size: int) -> None:
    """Entry point of a local multi-task run: start its ``world_size`` ranks, wait for them, exit with rank
    0's code (the local backend reads a Ctrl-C's 130 there)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches each rank itself
    group = Group(path, world_size)
    signal.signal(signal.SIGTERM, lambda signum, frame: group.signal_all(signal.SIGTERM))  # a cancel: every rank
    group.start()
    code = group.wait()
    end = last_event(group.run_dir.journal, Event.END) if group.run_dir.journal.exists() else None
    sys.exit(code if code else (0 if end and end.get("status") == FINISHED else 1))
