"""Is a process (or a process group) still there? One answer for every reader: the backends judging jobs
of an earlier orchestrator, the Slurm submitter check, the tracking server and UI lifecycles."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from orchestrator.vocabulary import Event


def pid_alive(pid: int) -> bool:
    """True while ``pid`` exists; a process of another user (PermissionError) exists too."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def start_time(pid: int) -> float | None:
    """When ``pid`` started (Unix time, to the clock tick), from /proc; None when it is gone or unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 of stat(5): starttime, in clock ticks after boot
        return _boot_time() + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    raise ValueError("no btime in /proc/stat")


# A process's start time from /proc is rounded to a clock tick and btime to a second: allow for both.
START_SLACK_S = 2.0


def same_process(pid: int, started_by: float | None) -> bool:
    """``pid`` is alive and is the process that was running at Unix time ``started_by`` (e.g. the ``t`` of
    the journal's ``start`` event, which the worker writes after it started). After a reboot or a long
    time, a dead worker's pid can belong to another process: one that started later is not that worker."""
    if not pid_alive(pid):
        return False
    if started_by is None:
        return True
    began = start_time(pid)
    return began is None or began <= started_by + START_SLACK_S


def terminate_workers(journals: list[Path], grace_s: float) -> None:
    """SIGTERM the worker that journaled the latest ``start`` of each journal, if it is still that process
    (a worker of another orchestrator process, on this host), then wait up to ``grace_s`` for each to
    journal its own KILLED end: a canceller that closes the run meanwhile would record a second end."""
    from orchestrator.job.journal import ended_last, last_event

    signalled = []
    for journal in journals:
        start = last_event(journal, Event.START)
        if start is not None and same_process(start["pid"], start["t"]):  # never a reused pid
            os.kill(start["pid"], signal.SIGTERM)
            signalled.append((journal, start))
    deadline = time.monotonic() + grace_s
    while signalled and time.monotonic() < deadline:
        signalled = [
            (journal, start)
            for journal, start in signalled
            if not ended_last(journal) and same_process(start["pid"], start["t"])
        ]
        time.sleep(0.05)


def reap(pid: int) -> None:
    """Collect ``pid`` when it is our exited child, so that it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) member of the process group remains."""
    reap(pgid)
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie leader with no other member still answers killpg: look for a live member.
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False
