"""orch from Python.

Inside a job (a ``command:`` workload): ``orch.log(step, **metrics)``, ``orch.final(**metrics)``,
``orch.checkpoint_dir()``, ``orch.resuming()``; these import nothing but the standard library, so a
training script pays nothing for them, and they do nothing but warn once when the script runs outside orch.

In a notebook: ``orch.submit(spec_or_path, seeds=..., backend=..., wait=...)``, ``orch.status(name)``,
``orch.runs(name)`` (a pandas DataFrame, one row per seed run that counts), ``orch.compare(name)`` (the
report ``orch compare`` prints). They are ``orchestrator.api``'s functions, imported on first use."""

from __future__ import annotations

from typing import Any

from orch.client import checkpoint_dir, final, log, resuming

API = ("submit", "status", "runs", "compare", "cancel", "sync", "find_run", "run_logs", "reproduce")


def __getattr__(name: str) -> Any:
    if name in API:
        from orchestrator import api

        return getattr(api, name)
    raise AttributeError(f"module 'orch' has no attribute '{name}'")


__all__ = ["log", "final", "checkpoint_dir", "resuming", *API]
