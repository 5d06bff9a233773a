"""Running a workload through its schedule (a spec's ``schedule:``, spec/schedule.py): phase by phase, each
with its own params, the switch made the way Population Based Training made it. When the workload saves
the checkpoint of the step before the next phase, it is stopped there and started again with that phase's
params: it resumes from that checkpoint (``ctx.load_checkpoint``, the resume contract every workload keeps),
with every RNG seeded as a fresh start seeds them, as the restarted PBT trial was. So a workload needs no
code to change params mid-run, and a replayed PBT schedule ends, on the trial's seed, with the trial's
metrics. A workload that checkpoints no step just before a phase switches at its next checkpoint (warned)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from orchestrator.job.journal import last_event
from orchestrator.vocabulary import Event


class PhaseEnd(BaseException):
    """Raised from ``ctx.save_checkpoint`` at a phase's end (a BaseException: a workload's ``except Exception``
    must not swallow it)."""


def resumed_step(ctx) -> int | None:
    """The step of the checkpoint a (re)started workload resumes from, as the journal says (None: from scratch)."""
    if not ctx.run_dir.checkpoint.exists():
        return None
    return (last_event(ctx.run_dir.journal, Event.CHECKPOINT) or {}).get("step")


def run(
    runner: Callable[[Any, Any], dict[str, float] | None],
    model: Any,
    params: Any,
    schedule: list[dict[str, Any]] | None,
    ctx,
    reseed: Callable[[int], None],
) -> dict[str, float]:
    if not schedule:
        return runner(params, ctx) or {}
    phases = [(0, params, {})] + [(p["step"], model.model_validate(p["params"]), p["set"]) for p in schedule]
    switched = False  # a phase ended in this process (not a resume after a crash)
    while True:
        resumed = resumed_step(ctx)
        start = 0 if resumed is None else resumed + 1
        index = max(i for i, (step, _, _) in enumerate(phases) if step <= start)
        first, phase_params, changed = phases[index]
        if index:
            ctx.journal.write(Event.PHASE, step=start, phase=index, params=changed)
            if start > first and switched:
                ctx.warn(
                    f"schedule: phase {index} began at step {start}, not {first}: no checkpoint of step {first - 1}"
                )
        end = phases[index + 1][0] if index + 1 < len(phases) else None

        def stop(step: int | None, end: int | None = end) -> None:
            if end is not None and step is not None and step >= end - 1:
                raise PhaseEnd

        ctx.on_checkpoint.append(stop)
        try:
            final = runner(phase_params, ctx) or {}
        except PhaseEnd:
            reseed(ctx.seed)  # as a restarted process: global RNGs seeded, ctx.rng fresh (the checkpoint restores)
            ctx.rng = np.random.default_rng(ctx.seed)
            switched = True
            continue
        finally:
            ctx.on_checkpoint.remove(stop)
        if end is not None:
            ctx.warn(f"schedule: the run ended at step {ctx.last_step}, before phase {index + 1} (step {end})")
        return final
