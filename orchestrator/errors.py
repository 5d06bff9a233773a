"""User-facing errors. Every bad input becomes an ``InputError``: the CLI prints it and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class InputError(Exception):
    """Bad input from the user: a spec file, a CLI flag, a run id.

    ``source`` names where it came from (a file path or ``--set``), ``field`` the dotted path inside it.
    """

    def __init__(self, message: str, source: str | None = None, field: str | None = None):
        self.message = message
        self.source = source
        self.field = field
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.source, self.field) if part)
        return f"{where}: {self.message}" if where else self.message


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when a close match exists, else ''."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


class StorageError(Exception):
    """The disk said no (full, over quota, read-only) while orch wrote its own records. Nothing is lost:
    the journal is re-read from the last line that reached MLflow once there is room (exit code 1)."""

    def __init__(self, message: str, path: str | None = None):
        self.message = message
        self.path = path
        super().__init__(f"{path}: {message}" if path else message)


_NO_SPACE_ERRNOS = (28, 122, 30)  # ENOSPC, EDQUOT, EROFS (Linux numbers; errno is not imported for three ints)
_NO_SPACE_WORDS = ("disk is full", "no space left", "disk quota", "read-only file system")


def storage_error(err: BaseException, doing: str = "") -> StorageError | None:
    """``err`` as a StorageError when the disk refused a write (an OSError with ENOSPC/EDQUOT/EROFS, or a
    database's "disk is full" wrapped by MLflow or SQLAlchemy), or when an sqlite store stayed locked past
    its busy timeout (another process holding a write transaction), else None."""
    errno_ = getattr(err, "errno", None)
    text = str(err)
    if "database is locked" in text.lower():
        return StorageError("the sqlite store stayed locked by another process's write while orch waited for it "
                            "(a long `sqlite3` session, a backup, another tool): nothing was lost; run the command "
                            "again once it is done, or use a tracking server for many writers (orch server start)")
    if errno_ not in _NO_SPACE_ERRNOS and not any(w in text.lower() for w in _NO_SPACE_WORDS):
        return None
    what = getattr(err, "strerror", None) or text.splitlines()[0][:300]
    return StorageError(f"{what}{f' while {doing}' if doing else ''}; free space, then run the command again: "
                        "runs continue from their journals, nothing is lost", getattr(err, "filename", None))
