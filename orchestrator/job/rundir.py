"""A run directory: what one job writes (journal, checkpoint, logs, artifacts) and what it is told
(run.json). It lives under the spec's ``workdir`` (on a cluster: the shared filesystem), one per run key."""

from __future__ import annotations

import json
import os
import stat
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from orchestrator.job.runjson import RunJob


def umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only set it, and another thread
    creating a file meanwhile would get the wrong mode): Linux reports it in /proc/self/status."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Write-then-rename, so a reader (or a resume) never sees half a file. The tmp file's name is unique
    to this writer (tempfile, in the same directory so the rename stays on one filesystem): two processes
    writing the same file at once (``orch cancel`` and ``orch submit`` ingesting one journal) must not
    rename each other's tmp file away; the last rename wins, each a complete file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:  # False: the threat is a writer dying, not the machine (fsync x 500 costs seconds)
                os.fsync(f.fileno())
        # mkstemp makes it 0600. Readable as the umask allows, never writable by others than its owner: a
        # checkpoint others could rewrite is refused (open_trusted), also in a store a lab group shares
        os.chmod(tmp, 0o644 & ~umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class UntrustedFile(RuntimeError):
    """A pickle orch will not load: unpickling runs code, so the file must be the user's alone."""


def open_trusted(path: Path) -> IO[bytes]:
    """Open a file that will be unpickled, refusing one that another user owns or that group or others may
    write (a group-writable lab workdir: anyone in the group could plant code there), and a symlink. The
    checks are made on the opened descriptor, so the file cannot be swapped between the check and the read."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    info = os.fstat(fd)
    problem = (
        f"owned by uid {info.st_uid}, not you"
        if info.st_uid != os.getuid()
        else "writable by group or others"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        else None
    )
    if problem:
        os.close(fd)
        raise UntrustedFile(
            f"refusing to unpickle {path}: {problem}. Loading a pickle runs code; if you trust it, "
            f"make it yours and private (chown $USER; chmod go-w), or delete it to start over"
        )
    return os.fdopen(fd, "rb")


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def spec_file(self) -> Path:
        return self.path / "run.json"

    @property
    def journal(self) -> Path:
        return self.path / "journal.jsonl"

    @property
    def checkpoint(self) -> Path:
        return self.path / "checkpoint.pkl"

    @property
    def checkpoints(self) -> Path:
        """A command workload's checkpoint directory (``$ORCH_CHECKPOINT_DIR``), kept across attempts."""
        return self.path / "checkpoints"

    def has_checkpoint(self) -> bool:
        """Something to resume from: a Python workload's checkpoint.pkl, or a command's files."""
        return self.checkpoint.exists() or (self.checkpoints.is_dir() and any(self.checkpoints.iterdir()))

    @property
    def scheduler_record(self) -> Path:
        """What the backend recorded of this run's submission (Slurm: its token and job id; Ray: its driver
        folder); both list the scheduler's own ``logs`` that ``orch logs`` shows."""
        return self.path / "scheduler.json"

    @property
    def stdout(self) -> Path:
        return self.path / "stdout.log"

    @property
    def stderr(self) -> Path:
        return self.path / "stderr.log"

    def rank_logs(self) -> list[Path]:
        """The logs of a multi-task run's other ranks (``stdout.rank1.log``, ``stderr.rank1.log``, ...); rank
        0 writes ``stdout.log`` / ``stderr.log``. Separate files: ranks on other nodes would interleave (and, on
        NFS, clobber) appends to one file."""
        return sorted(self.path.glob("std*.rank*.log"), key=lambda p: (int(p.name.split(".rank")[1][:-4]), p.name))

    @property
    def ranks(self) -> Path:
        """Where a multi-task run's ranks say how they ended (job/dist.py), one folder per attempt."""
        return self.path / "ranks"

    @property
    def artifacts(self) -> Path:
        return self.path / "artifacts"

    @property
    def cursor(self) -> Path:
        return self.path / "ingested.json"

    @property
    def cancel_marker(self) -> Path:
        return self.path / "cancelled"

    def create(self, payload: RunJob | dict[str, Any]) -> None:
        """(Re)arm the directory for a submission: a cancel marker left by an earlier ``orch cancel`` is
        removed, since this submission asks for the run again (a resume of a cancelled run), and run.json
        gets a fresh ``armed`` mark, which each start of the run journals (``ended_since_armed``)."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.artifacts.mkdir(exist_ok=True)
        self.cancel_marker.unlink(missing_ok=True)
        job = RunJob.model_validate(payload) if isinstance(payload, dict) else payload
        job = job.model_copy(update={"armed": uuid.uuid4().hex})  # this submission's mark: its starts carry it
        atomic_write(self.spec_file, json.dumps(job.model_dump(mode="json"), indent=1, sort_keys=True).encode())

    def mark_cancelled(self, reason: str) -> None:
        """Tell whoever would start this run (the local backend of the ``orch submit`` that queued it, its
        worker) not to: the run was closed while queued, by another process than the one that owns it."""
        if self.path.is_dir():
            atomic_write(self.cancel_marker, reason.encode())

    def cancelled(self) -> str | None:
        """The reason of a cancel that reached this run directory since it was last armed, else None."""
        try:
            return self.cancel_marker.read_text() or "cancelled"
        except FileNotFoundError:
            return None

    def load(self) -> RunJob:
        """run.json, typed (a damaged one: a ValueError)."""
        return RunJob.model_validate_json(self.spec_file.read_text())

    def read_cursor(self) -> dict[str, Any]:
        if self.cursor.exists():
            return json.loads(self.cursor.read_text())
        return {"offset": 0, "max_step": {}, "run_id": None}

    def write_cursor(self, cursor: dict[str, Any]) -> None:
        # not fsynced (5 ms a run): a cursor lost with the machine only makes the next ingestion re-read
        # lines MLflow has already, which it skips (metrics are deduplicated, tags and status re-set)
        atomic_write(self.cursor, json.dumps(cursor).encode(), durable=False)


@contextmanager
def output_to(run_dir: RunDir, rank: int = 0) -> Iterator[None]:
    """Send fd 1/2 (the run's prints, and its libraries' C-level output) to the run directory's logs for
    the duration of one run, then give them back (a Ray worker process goes on to run other tasks).
    Every backend does this, so `orch logs` reads the same two files whatever ran the job; rank ``rank``
    > 0 of a multi-task run writes its own pair (``RunDir.rank_logs``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    targets = (
        (run_dir.stdout, run_dir.stderr)
        if rank == 0
        else (run_dir.path / f"stdout.rank{rank}.log", run_dir.path / f"stderr.rank{rank}.log")
    )
    try:
        for stream, target in zip((1, 2), targets, strict=True):
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            os.dup2(fd, stream)
            os.close(fd)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for stream, fd in zip((1, 2), saved, strict=False):
            os.dup2(fd, stream)
            os.close(fd)
