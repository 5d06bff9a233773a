"""`orch compare --curves`: every per-step metric of the groups' seeds (orch's own ``system/*`` samples left
out) as one curve per group: the mean over its seeds and the t-interval at each step. Steps are aligned
across seeds by keeping only the steps *every* seed of the group logged, so each point is a mean over the
same runs (a seed that stopped early, or logs every 10th step where the others log each, shortens the curve
rather than bending it); the number of seeds is the group's n at every step."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.analysis import stats, store
from orchestrator.analysis.compare import Curve, Experiment, Report

SKIPPED = "system/"  # orch's samples of the run's process (CPU, memory, GPU): not the workload's curves


@dataclass
class CurveSet:
    """metric -> group name -> its curve (groups without a common step are left out)."""

    metrics: list[str]
    curves: dict[str, dict[str, Curve]]

    def to_dict(self) -> dict:
        return {m: {g: c.__dict__ for g, c in by_group.items()} for m, by_group in self.curves.items()}


def step_metrics(exp: Experiment, report: Report) -> list[str]:
    """The metrics logged at more than one step by the first seed of each group, orch's own left out."""
    names: dict[str, None] = {}
    for g in report.groups:
        if g.run_ids:
            steps = store.steps_per_metric(exp.ledger, g.run_ids[0])
            names.update({m: None for m, n in sorted(steps.items()) if n > 1 and not m.startswith(SKIPPED)})
    return list(names)


def aligned(history: dict[str, dict[int, float]], confidence: float) -> Curve | None:
    """The steps every run logged, each with the mean over the runs and its t-interval."""
    runs = [steps for steps in history.values() if steps]
    if not runs or len(runs) < len(history):
        return None  # a run that never logged the metric leaves no step that every run has
    common = sorted(set.intersection(*(set(steps) for steps in runs)))
    if not common:
        return None
    rows = stats.mean_curve([[steps[s] for steps in runs] for s in common], confidence)
    return Curve(common, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])


def build(exp: Experiment, report: Report) -> CurveSet:
    metrics = step_metrics(exp, report)
    run_ids = [r for g in report.groups for r in g.run_ids]
    histories = store.histories(exp.ledger, run_ids, metrics)
    curves: dict[str, dict[str, Curve]] = {}
    for metric in metrics:
        for g in report.groups:
            curve = aligned({r: histories[r][metric] for r in g.run_ids}, report.confidence) if g.run_ids else None
            if curve is not None:
                curves.setdefault(metric, {})[g.name] = curve
    return CurveSet([m for m in metrics if m in curves], curves)
