"""Who may read what orch writes. A store holds a lab's unpublished results (the sqlite file, run
directories, artifacts, logs), so everything orch and its jobs create is private to its owner by default:
umask 077, set when a command or the Python API starts and inherited by every job it launches. A lab that
shares one store between its members sets ``ORCH_UMASK=007`` (the group reads and writes, others nothing)
and a shared group on the directory (``chgrp -R lab mlruns && chmod g+s mlruns``)."""

from __future__ import annotations

import os

from orchestrator.errors import InputError

UMASK_ENV = "ORCH_UMASK"
DEFAULT = "077"


def apply() -> int:
    """Set the process's umask from ``ORCH_UMASK`` (octal, default 077); returns it."""
    raw = os.environ.get(UMASK_ENV, DEFAULT).strip()
    try:
        mask = int(raw, 8)
    except ValueError:
        mask = -1
    if not 0 <= mask <= 0o777:
        raise InputError(f"expected an octal umask such as 077 (private) or 007 (a lab group), got {raw!r}", UMASK_ENV)
    os.umask(mask)
    return mask
