"""Backends by name: where runs can execute. A backend is a class in ``orchestrator/backends/`` with the
contract of ``orchestrator/backends/base.py``; adding one = its module plus one line below. The spec's
``backend:`` field, ``--backend``, ``orch status`` and ``orch cancel`` all read this table.

It holds import paths, not classes, so that validating a spec imports no Ray or submitit (seconds each);
``backends.base.make`` imports a backend when it is used."""

from __future__ import annotations

BACKENDS: dict[str, str] = {
    "local": "orchestrator.backends.local:LocalBackend",
    "slurm": "orchestrator.backends.slurm:SlurmBackend",
    "ray": "orchestrator.backends.ray:RayBackend",
}
NAMES = tuple(BACKENDS)
