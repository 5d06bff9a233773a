"""User-facing errors. Every bad input becomes an ``InputError``: the CLI prints it and exits 2."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pydantic


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


def invalid(
    err: pydantic.ValidationError,
    source: str | None,
    prefix: str = "",
    model: type[pydantic.BaseModel] | None = None,
    hint: str = "",
    hidden: Iterable[str] = (),
) -> InputError:
    """pydantic's ValidationError as one InputError: its first problem (an unknown key first: it usually
    explains a "missing" one), at its dotted path under ``prefix``, in our words: "unknown field (did you
    mean ...); expected one of ..." for an unknown key (the list when ``model`` is given), else the message and the
    value it got. ``hint`` is added after the message; ``hidden`` fields are never offered."""
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = ".".join(str(part) for part in first["loc"])
    field = ".".join(part for part in (prefix, loc) if part) or None
    if first["type"] == "extra_forbidden":
        known = [f for f in _model_at(model, first["loc"][:-1]).model_fields if f not in set(hidden)] if model else []
        listed = f"; expected one of: {', '.join(known)}" if known else ""
        return InputError(f"unknown field{did_you_mean(str(first['loc'][-1]), known)}{listed}{hint}", source, field)
    message = first["msg"].removeprefix("Value error, ")  # our validators' own words, without pydantic's label
    value = first.get("input")
    got = "" if isinstance(value, dict) or repr(value) in message else f" (got {value!r})"
    return InputError(f"{message}{got}{hint}", source, field)


def _model_at(model: type[pydantic.BaseModel], path: tuple) -> type[pydantic.BaseModel]:
    """The model a dotted path leads to (through ``X | None``), to list the fields known there."""
    import typing

    import pydantic

    for part in path:
        info = model.model_fields.get(str(part))
        for annotation in (info.annotation, *typing.get_args(info.annotation)) if info else ():
            if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
                model = annotation
                break
    return model


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
        return StorageError(
            "the sqlite store stayed locked by another process's write while orch waited for it "
            "(a long `sqlite3` session, a backup, another tool): nothing was lost; run the command "
            "again once it is done, or use a tracking server for many writers (orch server start)"
        )
    if errno_ not in _NO_SPACE_ERRNOS and not any(w in text.lower() for w in _NO_SPACE_WORDS):
        return None
    what = getattr(err, "strerror", None) or text.splitlines()[0][:300]
    return StorageError(
        f"{what}{f' while {doing}' if doing else ''}; free space, then run the command again: "
        "runs continue from their journals, nothing is lost",
        getattr(err, "filename", None),
    )
