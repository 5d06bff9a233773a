"""Where runs execute. A backend is a class with ``name``, ``blocking``, ``from_spec`` and ``submit`` /
``poll`` / ``cancel`` (the contract: ``backends/base.py``). Adding one = its module plus one line below;
the spec's ``backend:`` field, ``--backend`` and ``orch cancel`` / ``status`` all read this table.

The table holds import paths, not classes: this package imports nothing, so validating a spec costs no
Ray or submitit import (each is seconds); ``base.make`` imports a backend when it is used."""

from __future__ import annotations

REGISTRY: dict[str, str] = {
    "local": "orchestrator.backends.local:LocalBackend",
    "slurm": "orchestrator.backends.slurm:SlurmBackend",
    "ray": "orchestrator.backends.ray:RayBackend",
}
NAMES = tuple(REGISTRY)
