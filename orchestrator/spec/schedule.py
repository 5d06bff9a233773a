"""A spec's ``schedule:``: params that change during a run. Each phase says from which step on which params
hold (dotted keys, as in ``--set``); the run is restarted from its checkpoint of the step before, with the
new params (``job/phases.py``), which is exactly what Population Based Training did to the trial the
schedule comes from (``orch tune``'s ``best.yaml`` of a PBT sweep). Validated here, per run, before anything
is submitted; the schedule is part of the run's identity (``plan.Run``), so a scheduled configuration is a
group of its own, compared across seeds like any other.

    params: {lr: 0.01}
    schedule:
      - {step: 40, params: {lr: 0.012}}     # steps 40.. run with lr 0.012 (restarted from step 39's checkpoint)
      - {step: 80, params: {lr: 0.0096}}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from orchestrator.errors import InputError
from orchestrator.spec.spec import Spec, deep_merge, flatten, nest, validate_params


def resolve(spec: Spec, model: type[BaseModel], params: dict[str, Any]) -> list[dict[str, Any]]:
    """The phases of ``spec.schedule`` over a run's resolved ``params``: each ``{"step", "params"}`` (every
    param, resolved and validated: what the worker runs) and ``"set"`` (the changed params' resolved values:
    what the run's key hashes). Mistakes are InputErrors naming ``schedule[i]...``."""
    if not spec.schedule:
        return []
    source = spec.source
    if spec.command:
        raise InputError(
            "a schedule restarts a Python workload from its checkpoint at each phase; a command spec has no "
            "params to change mid-run",
            source,
            "schedule",
        )
    phases: list[dict[str, Any]] = []
    current, previous = params, 0
    for i, raw in enumerate(spec.schedule):
        where = f"schedule[{i}]"
        if not isinstance(raw, dict) or set(raw) != {"step", "params"}:
            raise InputError(f"expected {{step: N, params: {{key: value}}}}, got {raw!r}", source, where)
        step, changes = raw["step"], raw["params"]
        if not isinstance(step, int) or isinstance(step, bool) or step <= previous:
            raise InputError(
                f"expected a step after {previous} (phases in order, the first from a step >= 1), got {step!r}",
                source,
                f"{where}.step",
            )
        if not isinstance(changes, dict) or not changes:
            raise InputError("expected the params this phase changes, e.g. {lr: 0.01}", source, f"{where}.params")
        flat_changes = flatten(nest(changes))  # unknown keys: validate_params names them, with a suggestion
        current = validate_params(model, deep_merge(current, nest(changes)), source, f"{where}.params").model_dump(
            mode="json"
        )
        resolved = flatten(current)
        phases.append({"step": step, "params": current, "set": {k: resolved[k] for k in sorted(flat_changes)}})
        previous = step
    return phases


def schedule_identity(phases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What a run's key hashes of its schedule: each phase's step and the values it sets."""
    return [{"step": p["step"], "set": p["set"]} for p in phases]
