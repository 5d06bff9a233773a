"""orch's per-user cache (``$XDG_CACHE_HOME/orch``, else ``~/.cache/orch``): values that change only when
the installation does (MLflow's schema head, the installed packages), computed once and reused by every
command. A cache that cannot be written (a read-only home) only means the value is computed each time."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "orch"


def cached(name: str, key: str, compute: Callable[[], str]) -> str:
    """``compute()``, stored under ``name`` for this ``key``; an empty stored value counts as missing."""
    path = cache_dir() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}"
    try:
        value = path.read_text()
        if value:
            return value
    except OSError:
        pass
    value = compute()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(value)
        os.replace(tmp, path)  # two commands filling it at once: either whole value wins
    except OSError:
        pass
    return value
