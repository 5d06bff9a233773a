"""What a metric may be called and at which step it may be logged: MLflow's own rules, checked where a run
writes its journal (``ctx.log``, a command's metrics lines, the final metrics) and again where journals are
ingested, so that one run's bad name fails that run alone instead of every later ingestion of the store.
Written out here because the job process does not import MLflow (its start-up cost); a test holds these
rules equal to ``mlflow.utils.validation`` on every case it knows."""

from __future__ import annotations

import functools
import posixpath
import re

MAX_NAME = 250  # MLflow's MAX_ENTITY_KEY_LENGTH
STEP_RANGE = (-(2**63), 2**63 - 1)  # a step is a 64-bit integer in every MLflow store
_ALLOWED = re.compile(r"^[/\w.\- :]*$")  # alphanumerics, _ - . space : and /


@functools.lru_cache(maxsize=4096)
def name_problem(name: object) -> str | None:
    """Why MLflow would refuse ``name`` as a metric name, or None. Cached: a run logs the same few names at
    every step, and ingestion checks every row."""
    if not isinstance(name, str) or not name:
        return f"a metric name must be a non-empty string, got {name!r}"
    if len(name) > MAX_NAME:
        return f"metric name {name[:40]!r}... is {len(name)} characters long; MLflow takes at most {MAX_NAME}"
    if not _ALLOWED.match(name):
        return (
            f"metric name {name!r}: only letters, digits, underscores, dashes, periods, spaces, colons and "
            "slashes are allowed"
        )
    norm = posixpath.normpath(name)
    if norm != name or norm == "." or norm.startswith("..") or norm.startswith("/"):
        return f"metric name {name!r} reads as a path that resolves to {norm!r}; MLflow refuses it"
    return None


def step_problem(step: object) -> str | None:
    if isinstance(step, bool) or not isinstance(step, int):
        return f"a step must be an integer, got {step!r}"
    if not STEP_RANGE[0] <= step <= STEP_RANGE[1]:
        return f"step {step} is outside MLflow's 64-bit range"
    return None


def check(step: int | None, metrics: dict[str, float]) -> None:
    """Raise ValueError naming the first metric (or step) MLflow would refuse."""
    problem = step_problem(step) if step is not None else None
    for name in metrics:
        problem = problem or name_problem(name)
    if problem:
        raise ValueError(problem)
