"""orch: experiments declared in YAML, every seed run locally, on Slurm or on Ray, recorded in MLflow,
compared across seeds. The words, in the order data flows (docs/architecture.md has the map):

- **Spec**: a validated YAML declaration (``spec/spec.py``); **Run**: workload + resolved params + seed,
  identified by its content hash ``key``; a **group** is the same configuration over seeds (``spec/plan.py``).
- **Workload**: a package with ``Params``, ``METRIC``/``MODE`` and ``run(params, ctx)`` (``spec/registry.py``).
- **Run directory** and **journal**: all a job writes (``job/``); the **worker** runs the workload there,
  through a **RunContext**, the only thing a workload sees of orch.
- **Backend**: where jobs run, ``local``, ``slurm`` or ``ray`` (``backends/``).
- **Ledger**: MLflow as the system of record, fed by ingesting journals (``tracking/``).
- **Status**, **compare**: counts and statistics across seeds (``analysis/``); **sweep**: ``orch tune`` (``tune/``).

The Python API is ``orchestrator.api`` (also reachable from here: ``orchestrator.submit(...)``). Importing
this package imports nothing else: a job's process stays free of MLflow."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
API = (
    "submit",
    "plan_submission",
    "run_in_process",
    "status",
    "runs",
    "compare",
    "reproduce",
    "cancel",
    "sync",
    "run_logs",
    "find_run",
    "open_experiment",
)


def __getattr__(name: str) -> Any:
    if name in API:
        from orchestrator import api

        return getattr(api, name)
    raise AttributeError(f"module 'orchestrator' has no attribute '{name}'")


__all__ = list(API)
