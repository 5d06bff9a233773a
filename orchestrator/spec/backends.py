"""Backends by name: where runs can execute. A backend is a subclass of ``orchestrator.backends.base.Backend``;
the built-in ones are below, and an installed package adds one with an entry point, nothing in orch edited:

    [project.entry-points."orch.backends"]
    mycluster = "mylab.cluster:MyClusterBackend"

The spec's ``backend:`` field, ``--backend``, ``orch status`` and ``orch cancel`` all read this table. It
holds import paths, not classes, so that validating a spec imports no Ray or submitit (seconds each);
``backends.base.make`` imports a backend when it is used."""

from __future__ import annotations

import importlib.metadata
from functools import cache

from orchestrator.errors import InputError, did_you_mean

ENTRY_POINTS = "orch.backends"
BUILT_IN: dict[str, str] = {
    "local": "orchestrator.backends.local:LocalBackend",
    "slurm": "orchestrator.backends.slurm:SlurmBackend",
    "ray": "orchestrator.backends.ray:RayBackend",
}


@cache
def backends() -> dict[str, str]:
    """Name -> "module:Class": the built-in backends, then every installed package's ``orch.backends``
    entry points (a built-in name cannot be taken over)."""
    found = {ep.name: ep.value for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)}
    return {**found, **BUILT_IN}


def names() -> tuple[str, ...]:
    return tuple(backends())


def unknown(name: str) -> str | None:
    """Why ``name`` is not a backend (None when it is one)."""
    if name in backends():
        return None
    return f"unknown backend '{name}'{did_you_mean(name, names())}; expected one of: {', '.join(names())}"


def check(name: str, source: str = "backend") -> None:
    """Refuse, before anything is submitted, a backend that does not exist."""
    message = unknown(name)
    if message is not None:
        raise InputError(message, source)
