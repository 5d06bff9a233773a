"""Backends by name. Each module is imported only when used (Ray and submitit are heavy)."""

from __future__ import annotations

from orchestrator.errors import InputError

AVAILABLE = {"local": "orchestrator.backends.local", "ray": "orchestrator.backends.ray",
             "slurm": "orchestrator.backends.slurm"}
PLANNED: dict[str, str] = {}


def check(name: str, source: str = "backend") -> None:
    """Refuse, before anything is submitted, a backend that does not exist (yet)."""
    if name in AVAILABLE:
        return
    if name in PLANNED:
        raise InputError(f"backend '{name}' is not available in this version of orch: {PLANNED[name]} "
                         "has not landed yet; use 'local'", source)
    raise InputError(f"unknown backend '{name}'; expected one of: {', '.join(AVAILABLE)}", source)
