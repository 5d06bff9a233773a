"""The metrics client of a command workload: JSON lines appended to ``$ORCH_METRICS`` (see
``orchestrator/job/command.py`` for the contract). Standard library only."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

_warned = False


def _append(record: dict) -> None:
    global _warned
    path = os.environ.get("ORCH_METRICS")
    if not path:
        if not _warned:
            print("orch: ORCH_METRICS is not set (not running under orch): metrics are not recorded", file=sys.stderr)
            _warned = True
        return
    # one write per line, flushed at once: the worker reads complete lines while the script runs
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, allow_nan=False) + "\n")


def _numbers(metrics: dict) -> dict:
    out = {}
    for name, value in metrics.items():
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"orch.log: metric '{name}' is {value}: JSON has no NaN/inf (log it as a failure instead)")
        out[name] = value
    return out


def log(step: int, **metrics: float) -> None:
    """Record ``metrics`` at ``step`` (an int; a resumed script may log a step again: it is kept once)."""
    _append({"step": int(step), **_numbers(metrics)})


def final(**metrics: float) -> None:
    """The run's final metrics (without a call: each metric's last logged value)."""
    _append({"final": _numbers(metrics)})


def checkpoint_dir() -> Path | None:
    """A directory kept across the run's attempts (requeue, resume), or None outside orch."""
    path = os.environ.get("ORCH_CHECKPOINT_DIR")
    return Path(path) if path else None


def resuming() -> bool:
    """True when an earlier attempt of this run left something in ``checkpoint_dir()``."""
    return os.environ.get("ORCH_RESUME") == "1"
