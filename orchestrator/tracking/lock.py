"""One submission at a time per experiment: a lock file held from reconcile to the backend's submit, so
two ``orch submit`` of one spec cannot both find a run missing and both create it.

Made for shared filesystems: no flock/fcntl (NFS implementations differ, and a lock held by a dead client
can stay until its lease ends). The lock is a file created with O_EXCL (atomic on NFSv3 and later and on
every local filesystem) holding who took it: pid, its process start time, host, when. A holder that is
gone leaves a stale file; the next taker breaks it when
  - the holder was on this host and that process no longer runs (pid and start time, so a reused pid
    does not keep it alive), or
  - the holder was on another host and stopped refreshing the file's mtime (a heartbeat every
    ``HEARTBEAT_S``) for ``STALE_S``: that host or process died.
A waiting submit polls until the lock is free, then reconciles and finds the other's runs queued or done."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

from orchestrator.errors import InputError
from orchestrator.job.liveness import same_process, start_time
from orchestrator.spec.tracking_uri import sqlite_path

HEARTBEAT_S = 10.0
STALE_S = 120.0  # generous: other hosts' clocks and NFS attribute caching differ by seconds
WAIT_S = 30 * 60.0  # a submission of thousands of runs to Slurm can hold it for minutes
TELL_AFTER_S = 2.0
log = logging.getLogger("orch")


class LockTimeout(InputError):
    pass


class SubmitLock:
    """``with SubmitLock(path, what):`` or ``acquire()`` / ``release()``."""

    def __init__(
        self, path: Path, what: str, wait_s: float = WAIT_S, stale_s: float = STALE_S, heartbeat_s: float = HEARTBEAT_S
    ):
        self.path = path
        self.what = what
        self.wait_s = wait_s
        self.stale_s = stale_s
        self.heartbeat_s = heartbeat_s
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self.waited_s = 0.0

    # -- taking and giving back ----------------------------------------------------------------------
    def acquire(self) -> SubmitLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        told = False
        while True:
            if self._try_create():
                self.waited_s = time.monotonic() - began
                self._beat = threading.Thread(target=self._heartbeat, name="orch-lock-heartbeat", daemon=True)
                self._beat.start()
                return self
            holder = self.holder()
            if holder is not None and self.is_stale(holder):
                self._break(holder)
                continue
            if not told and time.monotonic() - began > TELL_AFTER_S:  # say why this submit seems to hang
                log.warning(
                    "waiting for another orch submit of %s (%s) to hand its runs over", self.what, describe(holder)
                )
                told = True
            if time.monotonic() - began > self.wait_s:
                raise LockTimeout(
                    f"another orch submit holds the lock of {self.what} ({describe(holder)}) for "
                    f"more than {self.wait_s:.0f} s; if that process is gone, remove {self.path}"
                )
            time.sleep(0.1 + random.random() * 0.2)  # jitter: waiters do not all retry in the same instant

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
        holder = self.holder()
        if holder is not None and holder.get("token") == self.token:  # never remove another's lock
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> SubmitLock:
        return self.acquire()

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    # -- the file ------------------------------------------------------------------------------------
    def _try_create(self) -> bool:
        pid = os.getpid()
        payload = {
            "pid": pid,
            "started": start_time(pid),
            "host": socket.gethostname(),
            "at": time.time(),
            "token": self.token,
        }
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        try:
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(payload))
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            # (a full disk) an empty lock file left behind would read as held by an unknown holder and make
            # the next submit wait until it goes stale
            self.path.unlink(missing_ok=True)
            raise
        return True

    def holder(self) -> dict[str, Any] | None:
        """Who holds the lock, or None when it is free. A file being written (empty, or half of its JSON:
        its creator is between O_EXCL and the write) reads as held by an unknown holder, judged by mtime."""
        try:
            text = self.path.read_text()
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except ValueError:
            holder = {}
        return {**holder, "mtime": mtime} if isinstance(holder, dict) else {"mtime": mtime}

    def is_stale(self, holder: dict[str, Any]) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not same_process(holder["pid"], holder.get("started") or holder.get("at"))
        return time.time() - holder["mtime"] > self.stale_s

    def _break(self, holder: dict[str, Any]) -> None:
        """Move the stale file aside (rename is atomic: of two breakers one wins), then drop it. Should a
        fresh lock have replaced the stale one between the look and the rename, put it back."""
        aside = self.path.with_name(f"{self.path.name}.stale.{uuid.uuid4().hex[:8]}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            moved = {}
        if holder.get("token") is not None and moved.get("token") not in (None, holder.get("token")):
            with contextlib.suppress(FileExistsError):  # restore unless someone took the free lock meanwhile
                os.link(aside, self.path)
        aside.unlink(missing_ok=True)

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            try:
                os.utime(self.path)
            except OSError:
                return


def describe(holder: dict[str, Any] | None) -> str:
    if not holder or "pid" not in holder:
        return "holder unknown"
    since = time.strftime("%H:%M:%S", time.localtime(holder.get("at", 0)))
    return f"pid {holder['pid']} on {holder.get('host', '?')} since {since}"


def submit_lock(experiment: str, uri: str, workdir: str | Path) -> SubmitLock:
    """The lock of one experiment in one store: beside an sqlite store (every submit to that file meets it,
    whatever its workdir), else in the workdir (the shared filesystem the run directories are on)."""
    database = sqlite_path(uri)
    folder = database.resolve().parent / "locks" if database is not None else Path(workdir).resolve() / experiment
    return SubmitLock(folder / f"{experiment}.submit.lock", f"experiment '{experiment}'")
