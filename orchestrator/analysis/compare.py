"""`orch compare`: gather an experiment's seed runs from MLflow into groups, summarise each group, test
each group against the baseline (or every pair), and say in plain words what the numbers mean.

Groups are made of parent runs (one per variant x grid point, ``orch.role=group``): by default each
parent is a group; ``--by`` merges parents that share the given params/tags. Seed runs join their
parent's group through ``orch.group``. Only FINISHED seeds count; the counts of running, failed and
missing ones come from ``status.experiment_status`` so that both commands agree."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.analysis import stats
from orchestrator.analysis.grouping import group_names, group_parents, pooling_notes
from orchestrator.analysis.interval import aggregates
from orchestrator.analysis.status import experiment_status
from orchestrator.analysis.verdict import chance_levels, chance_notes, verdict
from orchestrator.errors import InputError, did_you_mean
from orchestrator.spec.identity import describe_drift
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.records import FINISHED, RUNNING, Role, Tag, latest_per_key, role_filter, search_all


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

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runs": self.counts,
            "seeds": self.seeds,
            "values": self.values,
            "run_ids": self.run_ids,
            "parent_run_ids": self.parents,
            **(self.summary.to_dict() if self.summary else {}),
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


# -- gathering ----------------------------------------------------------------------------------------
def gather(ledger: Ledger, experiment_id: str, metric: str, names: dict[str, str]) -> list[Group]:
    """Groups with the final values of ``metric`` of their FINISHED seeds (and the other runs counted);
    ``names``: parent run id -> group name (``group_names``)."""
    groups: dict[str, Group] = {}
    by_group_tag: dict[str, Group] = {}
    for status in experiment_status(ledger, experiment_id):  # ordered by start: the spec's order
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
    for best in latest_per_key(ledger.runs(experiment_id)):  # the same record status counts
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


def default_metric(ledger: Ledger, experiment_id: str) -> tuple[str, str]:
    """The spec's main metric and mode, as recorded on the parent runs."""
    for parent in ledger.runs(experiment_id, role=Role.GROUP):
        if parent.tags.get(Tag.METRIC):
            return parent.tags[Tag.METRIC], parent.tags.get(Tag.MODE, "min")
    raise InputError("no main metric recorded on the experiment's groups: pass --metric", "--metric")


# -- learning curves ----------------------------------------------------------------------------------
def pick_curve_metric(ledger: Ledger, groups: list[Group], metric: str, curve: str | None) -> str | None:
    """``--curve``, else the metric itself when it has a history, else ``final_X`` -> ``X``."""
    run_id = next((rid for g in groups for rid in g.run_ids), None)
    if run_id is None:
        return None
    if curve:
        if not ledger.client.get_metric_history(run_id, curve):
            known = sorted(ledger.client.get_run(run_id).data.metrics)
            raise InputError(
                f"no history of metric '{curve}'{did_you_mean(curve, known)}; known: {', '.join(known)}", "--curve"
            )
        return curve
    candidates = [metric] + [metric[len(p) :] for p in ("final_", "test_", "val_") if metric.startswith(p)]
    for name in candidates:
        if len(ledger.client.get_metric_history(run_id, name)) > 1:
            return name
    return None


def build_curve(ledger: Ledger, run_ids: list[str], name: str, confidence: float) -> Curve | None:
    per_step: dict[int, list[float]] = defaultdict(list)
    for run_id in run_ids:
        for m in ledger.client.get_metric_history(run_id, name):
            per_step[m.step].append(m.value)
    if not per_step:
        return None
    steps = sorted(per_step)
    rows = stats.mean_curve([per_step[s] for s in steps], confidence)
    return Curve(steps, [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])


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
    if test not in stats.PRIMARY:
        raise InputError(f"expected one of: {', '.join(stats.PRIMARY)}, got '{test}'", "--test")
    experiment_id = ledger.experiment_id(experiment)
    if experiment_id is None:
        raise InputError(f"no experiment named '{experiment}' in {ledger.uri}")
    if not 0 < alpha < 1:
        raise InputError(f"expected a number between 0 and 1, got {alpha}", "--alpha")
    if mode is not None and mode not in ("min", "max"):
        raise InputError(f"expected 'min' or 'max', got '{mode}'", "--mode")
    notes = []
    parents = group_parents(ledger, experiment_id, where)
    main_metric, main_mode = default_metric(ledger, experiment_id) if metric is None or mode is None else (metric, mode)
    metric = metric or main_metric
    if mode is None:
        mode = main_mode if metric == main_metric else "min"
        if metric != main_metric:
            notes.append(f"assumed lower {metric} is better; pass --mode max if higher is better")
    by = [b.strip() for b in (by or []) if b.strip()]
    names = group_names(parents, by)
    groups = gather(ledger, experiment_id, metric, names)
    notes += pooling_notes(parents, names)
    baseline = _baseline_name(baseline, [g.name for g in groups])

    for g in groups:
        g.summary = stats.summarize(g.values, confidence)
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
    comparisons = [
        stats.compare(x.name, x.values, y.name, y.values, x.seeds, y.seeds, confidence, test) for x, y in pairs
    ]
    stats.correct(comparisons, alpha)
    notes += [f"`{c.a}` vs `{c.b}`: {c.primary_why}" for c in comparisons if c.primary_why]
    for c in comparisons:
        c.outcome, c.verdict = verdict(c, metric, mode, alpha, confidence)
    if len(groups) < 2:
        notes.append("a single group: nothing to compare against (use --by to regroup)")
    chance = chance_levels(parents)
    if metric in chance:
        notes += chance_notes(groups, metric, mode, chance[metric])

    curve_metric = pick_curve_metric(ledger, groups, metric, curve)
    if curve_metric:
        for g in groups:
            g.curve = build_curve(ledger, g.run_ids, curve_metric, confidence)
    return Report(
        experiment,
        experiment_id,
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


# -- writing back to MLflow ---------------------------------------------------------------------------
def log_to_mlflow(ledger: Ledger, report: Report, files: Path) -> str:
    """Aggregates on each group's parent run (when the group is exactly one parent: a merged group has
    no parent of its own), and a comparison run holding the report and plots as artifacts."""
    for group in report.groups:
        if len(group.parents) == 1 and group.summary is not None:
            ledger.log_values(group.parents[0], aggregates(report.metric, group.values, report.confidence))
    verdicts = "\n".join(f"- {c.verdict}" for c in report.comparisons) or "(no comparison)"
    tags = {
        Tag.ROLE: Role.COMPARE,
        Tag.METRIC: report.metric,
        Tag.MODE: report.mode,
        Tag.BASELINE: report.baseline or "",
        Tag.BY: ",".join(report.by) or "group",
        "mlflow.note.content": f"orch compare {report.metric} ({report.mode})\n\n{verdicts}"[:5000],
    }
    settings = {
        "metric": report.metric,
        "mode": report.mode,
        "alpha": report.alpha,
        "baseline": report.baseline or "(all pairs)",
        "by": ",".join(report.by) or "group",
    }
    # one report run per metric, updated by each `orch compare` (the settings of the latest are its tags)
    tags.update({f"orch.compare.{k}": str(v) for k, v in settings.items()})
    found = search_all(
        ledger.client, report.experiment_id, f"{role_filter(Role.COMPARE)} and tags.`{Tag.METRIC}` = '{report.metric}'"
    )
    if found:
        run_id = found[0].info.run_id
        ledger.set_tags(run_id, tags)
        ledger.set_status(run_id, RUNNING)
    else:
        run_id = ledger.create_run(report.experiment_id, f"compare {report.metric}", tags, {}, status=RUNNING)
    ledger.log_values(
        run_id,
        {f"groups_significant_{o}": sum(c.outcome == o for c in report.comparisons) for o in ("better", "worse")},
    )
    ledger.client.log_artifacts(run_id, str(files))
    ledger.set_status(run_id, FINISHED)
    report.compare_run_id = run_id
    return run_id
