"""`orch compare`: gather an experiment's seed runs from MLflow into groups, summarise each group, test
each group against the baseline (or every pair), and say in plain words what the numbers mean.

Groups are made of parent runs (one per variant x grid point, ``orch.role=group``): by default each
parent is a group; ``--by`` merges parents that share the given params/tags. Seed runs join their
parent's group through ``orch.group``. Only FINISHED seeds count; the counts of running, failed and
missing ones come from ``status.experiment_status`` so that both commands agree."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from orchestrator.analysis import robust, stats, store
from orchestrator.analysis.grouping import group_names, group_parents, pooling_notes
from orchestrator.analysis.status import GroupStatus, experiment_status
from orchestrator.analysis.verdict import chance_levels, chance_notes, tuning_budgets, tuning_notes
from orchestrator.errors import InputError, did_you_mean
from orchestrator.spec.identity import describe_drift
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.records import FINISHED, RunRecord, Tag, latest_per_key


@dataclass
class Curve:
    steps: list[int]
    n: list[int]
    mean: list[float | None]
    low: list[float | None]
    high: list[float | None]


@dataclass
class Group:
    name: str
    parents: list[str]  # MLflow run ids of the parent runs merged into this group
    seeds: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("finished", "running", "pending", "failed", "killed", "missing", "no_metric"), 0
        )
    )
    summary: stats.Summary | None = None
    curve: Curve | None = None
    drifted: int = 0  # finished seeds recorded under another default (status.default_drift)
    drift: dict[str, list] = field(default_factory=dict)
    # the interquartile mean (robust.iqm) and its percentile bootstrap interval
    iqm: float | None = None
    iqm_low: float | None = None
    iqm_high: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runs": self.counts,
            "seeds": self.seeds,
            "values": self.values,
            "run_ids": self.run_ids,
            "parent_run_ids": self.parents,
            **(self.summary.to_dict() if self.summary else {}),
            "iqm": self.iqm,
            "iqm_low": self.iqm_low,
            "iqm_high": self.iqm_high,
            "curve": self.curve.__dict__ if self.curve else None,
        }


@dataclass
class Report:
    experiment: str
    experiment_id: str
    metric: str
    mode: str
    alpha: float
    baseline: str | None
    by: list[str]
    groups: list[Group]
    comparisons: list[stats.Comparison]
    curve_metric: str | None = None
    notes: list[str] = field(default_factory=list)
    confidence: float = stats.CONFIDENCE
    compare_run_id: str | None = None
    chance: dict[str, float] = field(default_factory=dict)  # metric -> the workload's declared chance level
    test: str = "t"  # the primary test's family (stats.PRIMARY)

    @property
    def chance_level(self) -> float | None:
        return self.chance.get(self.metric)

    def group(self, name: str) -> Group:
        return next(g for g in self.groups if g.name == name)

    def to_dict(self) -> dict[str, Any]:
        comparisons = []
        for c in self.comparisons:
            data = c.to_dict()
            data["p_values"] = {name: t.pvalue for name, t in c.tests.items()}
            comparisons.append(data)
        return {
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "metric": self.metric,
            "mode": self.mode,
            "alpha": self.alpha,
            "confidence": self.confidence,
            "correction": "holm",
            "test": self.test,
            "intervals": {
                "ci": "Student t interval of the mean",
                "boot": f"bootstrap interval of the mean ({stats.BOOT_RESAMPLES} resamples, "
                f"seed {stats.BOOT_SEED}; BCa, percentile when BCa is undefined)",
                "iqm": f"percentile bootstrap interval of the interquartile mean ({robust.RESAMPLES} resamples, "
                f"seed {robust.SEED})",
                "p_better": "P(a random run of a is better than a random run of b), ties 1/2; percentile "
                f"bootstrap interval, each group resampled on its own ({robust.RESAMPLES} resamples, "
                f"seed {robust.SEED})",
            },
            "baseline": self.baseline,
            "by": self.by,
            "curve_metric": self.curve_metric,
            "notes": self.notes,
            "compare_run_id": self.compare_run_id,
            "chance": self.chance_level,
            "groups": [g.to_dict() for g in self.groups],
            "comparisons": comparisons,
        }


# -- reading, once ------------------------------------------------------------------------------------
@dataclass
class Experiment:
    """What every metric of a comparison reads of the store: read once per `orch compare`."""

    ledger: Ledger
    name: str
    experiment_id: str
    parents: list[Any]  # group runs with params (store.StoredRun or MLflow Run), ``--where`` applied
    records: list[RunRecord]  # every seed attempt
    statuses: list[GroupStatus]
    _histories: dict[tuple[str, str], dict[int, float]] = field(default_factory=dict)

    @classmethod
    def read(cls, ledger: Ledger, name: str, where: str | None = None) -> Experiment:
        experiment_id = ledger.experiment_id(name)
        if experiment_id is None:
            raise InputError(f"no experiment named '{name}' in {ledger.uri}")
        parents = group_parents(ledger, experiment_id, where)
        records = ledger.runs(experiment_id)
        as_records = [
            RunRecord(p.info.run_id, p.info.status, p.data.tags, p.data.metrics, p.info.start_time) for p in parents
        ]
        statuses = experiment_status(ledger, experiment_id, records, as_records)
        return cls(ledger, name, experiment_id, parents, records, statuses)

    def history(self, run_ids: list[str], name: str) -> dict[str, dict[int, float]]:
        """run id -> step -> value of one metric (read for all asked runs at once, then kept)."""
        missing = [r for r in run_ids if (r, name) not in self._histories]
        if missing:
            for run_id, metrics in store.histories(self.ledger, missing, [name]).items():
                self._histories[(run_id, name)] = metrics[name]
        return {r: self._histories[(r, name)] for r in run_ids}


def gather(exp: Experiment, metric: str, names: dict[str, str]) -> list[Group]:
    """Groups with the final values of ``metric`` of their FINISHED seeds (and the other runs counted);
    ``names``: parent run id -> group name (``group_names``)."""
    groups: dict[str, Group] = {}
    by_group_tag: dict[str, Group] = {}
    for status in exp.statuses:  # ordered by start: the spec's order
        name = names.get(status.run_id)
        if name is None:
            continue
        group = groups.setdefault(name, Group(name, []))
        group.parents.append(status.run_id)
        by_group_tag[status.group] = group
        for count, value in (
            ("finished", status.finished),
            ("running", status.running),
            ("pending", status.pending),
            ("failed", status.failed),
            ("killed", status.killed),
            ("missing", status.missing),
        ):
            group.counts[count] += value
        group.drifted += status.drifted
        group.drift.update(status.drift)

    known_metrics: set[str] = set()
    for best in latest_per_key(exp.records):  # the same record status counts
        if best.status != FINISHED:
            continue
        owner = by_group_tag.get(best.tags.get(Tag.GROUP, ""))
        if owner is None:
            continue
        known_metrics.update(best.metrics)
        if metric not in best.metrics:
            owner.counts["no_metric"] += 1
            continue
        owner.values.append(float(best.metrics[metric]))
        owner.seeds.append(best.tags.get(Tag.SEED, ""))
        owner.run_ids.append(best.run_id)
    total_finished = sum(g.counts["finished"] for g in groups.values())
    if total_finished == 0:
        counts: defaultdict[str, int] = defaultdict(int)
        for g in groups.values():
            for k, v in g.counts.items():
                counts[k] += v
        raise InputError(
            f"no FINISHED runs yet ({counts['running']} running, {counts['pending']} queued, "
            f"{counts['failed']} failed, {counts['missing']} missing): nothing to compare"
        )
    if metric not in known_metrics:
        raise InputError(
            f"unknown metric '{metric}'{did_you_mean(metric, known_metrics)}; the finished runs "
            f"have: {', '.join(sorted(known_metrics))}",
            "--metric",
        )
    return list(groups.values())


def default_metric(parents: list[Any]) -> tuple[str, str]:
    """The spec's main metric and mode, as recorded on the parent runs."""
    for parent in parents:
        if parent.data.tags.get(Tag.METRIC):
            return parent.data.tags[Tag.METRIC], parent.data.tags.get(Tag.MODE, "min")
    raise InputError("no main metric recorded on the experiment's groups: pass --metric", "--metric")


# -- learning curves ----------------------------------------------------------------------------------
def pick_curve_metric(exp: Experiment, groups: list[Group], metric: str, curve: str | None) -> str | None:
    """``--curve``, else the metric itself when it has a history, else ``final_X`` -> ``X``."""
    run_id = next((rid for g in groups for rid in g.run_ids), None)
    if run_id is None:
        return None
    steps = store.steps_per_metric(exp.ledger, run_id)
    if curve:
        if not steps.get(curve):
            known = sorted(steps)
            raise InputError(
                f"no history of metric '{curve}'{did_you_mean(curve, known)}; known: {', '.join(known)}", "--curve"
            )
        return curve
    candidates = [metric] + [metric[len(p) :] for p in ("final_", "test_", "val_") if metric.startswith(p)]
    return next((name for name in candidates if steps.get(name, 0) > 1), None)


def build_curve(exp: Experiment, run_ids: list[str], name: str, confidence: float) -> Curve | None:
    """Mean and t-interval per step over the seeds that logged it (a step some seeds lack has a smaller n)."""
    per_step: dict[int, list[float]] = defaultdict(list)
    for steps in exp.history(run_ids, name).values():
        for step, value in steps.items():
            per_step[step].append(value)
    if not per_step:
        return None
    order = sorted(per_step)
    rows = stats.mean_curve([per_step[s] for s in order], confidence)
    return Curve(order, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])


def _baseline_name(baseline: str | None, names: list[str]) -> str | None:
    """``--baseline`` names a group exactly, or by the label its name starts with when only one group has it."""
    if baseline is None or baseline in names:
        return baseline
    matches = [n for n in names if n.startswith(f"{baseline} (")]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InputError(
            f"'{baseline}' names {len(matches)} groups (the same variant in other configurations): "
            f"{'; '.join(matches)}; pass one of them",
            "--baseline",
        )
    raise InputError(
        f"no group named '{baseline}'{did_you_mean(baseline, names)}; groups: {', '.join(names)}", "--baseline"
    )


def metric_report(
    exp: Experiment,
    metric: str,
    mode: str,
    notes: list[str],
    baseline: str | None = None,
    by: list[str] | None = None,
    alpha: float = 0.05,
    curve: str | None = None,
    confidence: float = stats.CONFIDENCE,
    test: str = "t",
) -> Report:
    """One metric's groups, summaries and comparisons, not yet Holm-corrected (``study.run_study`` corrects
    every metric's comparisons as one family, then writes the verdicts)."""
    by = [b.strip() for b in (by or []) if b.strip()]
    names = group_names(exp.parents, by)
    groups = gather(exp, metric, names)
    notes = notes + pooling_notes(exp.parents, names)
    baseline = _baseline_name(baseline, [g.name for g in groups])

    for g in groups:
        g.summary = stats.summarize(g.values, confidence)
        finite = [v for v in g.values if v == v and abs(v) != float("inf")]
        g.iqm = robust.iqm(finite)
        g.iqm_low, g.iqm_high = robust.iqm_interval(finite, confidence)
        if g.summary.n_nonfinite:
            notes.append(f"`{g.name}`: {g.summary.n_nonfinite} finished run(s) with a NaN/inf {metric} left out")
        if g.counts["no_metric"]:
            notes.append(f"`{g.name}`: {g.counts['no_metric']} finished run(s) did not log {metric}")
        if g.summary.n == 1:
            notes.append(f"`{g.name}` has a single run: no spread, no interval, no test")
        if g.drifted:
            changes = describe_drift({k: (v[0], v[1]) for k, v in g.drift.items()})
            notes.append(f"`{g.name}`: {g.drifted} finished run(s) ran with {changes}")

    if baseline is not None:
        base = next(g for g in groups if g.name == baseline)
        pairs = [(g, base) for g in groups if g is not base]
    else:
        pairs = [(groups[i], groups[j]) for i in range(len(groups)) for j in range(i + 1, len(groups))]
    comparisons = []
    sign = 1.0 if mode == "max" else -1.0  # P(better): higher values when higher is better, else lower
    for x, y in pairs:
        c = stats.compare(x.name, x.values, y.name, y.values, x.seeds, y.seeds, confidence, test)
        xs = [sign * v for v in x.values if v == v and abs(v) != float("inf")]
        ys = [sign * v for v in y.values if v == v and abs(v) != float("inf")]
        c.p_better = robust.probability_of_improvement(xs, ys)
        c.p_better_low, c.p_better_high = robust.poi_interval(xs, ys, confidence)
        comparisons.append(c)
    notes += [f"`{c.a}` vs `{c.b}`: {c.primary_why}" for c in comparisons if c.primary_why]
    notes += tuning_notes(pairs, tuning_budgets(exp.parents), baseline is not None)
    if len(groups) < 2:
        notes.append("a single group: nothing to compare against (use --by to regroup)")
    chance = chance_levels(exp.parents)
    if metric in chance:
        notes += chance_notes(groups, metric, mode, chance[metric])

    curve_metric = pick_curve_metric(exp, groups, metric, curve)
    if curve_metric:
        for g in groups:
            g.curve = build_curve(exp, g.run_ids, curve_metric, confidence)
    return Report(
        exp.name,
        exp.experiment_id,
        metric,
        mode,
        alpha,
        baseline,
        by,
        groups,
        comparisons,
        curve_metric,
        notes,
        confidence,
        chance=chance,
        test=test,
    )


def run_compare(
    ledger: Ledger,
    experiment: str,
    metric: str | None = None,
    mode: str | None = None,
    baseline: str | None = None,
    by: list[str] | None = None,
    alpha: float = 0.05,
    curve: str | None = None,
    confidence: float = stats.CONFIDENCE,
    where: str | None = None,
    test: str = "t",
) -> Report:
    """One metric's comparison (``study.run_study`` with one metric)."""
    from orchestrator.analysis.study import run_study  # study builds on this module

    return run_study(
        ledger, experiment, [metric] if metric else None, mode, baseline, by, alpha, curve, confidence, where, test
    ).report
