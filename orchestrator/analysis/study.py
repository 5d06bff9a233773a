"""`orch compare` over one or several metrics at once: each metric's report (``compare.metric_report``), the
primary p-values of *all* their comparisons corrected as one Holm family (a paper's table of five metrics
makes five times the comparisons, and its false positives grow with them), the verdicts written after that
correction, and, with several metrics, the groups scored over all of them (``robust.aggregate``).

Which way is better, per metric: ``--metric name:max`` / ``name:min`` says it; else ``--mode`` (with one
metric); else the workload's ``MODE`` for its main metric; else a guess from the name (``infer_mode``),
said in a note."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.analysis import robust, stats
from orchestrator.analysis.compare import Experiment, Report, default_metric, metric_report
from orchestrator.analysis.curves import CurveSet
from orchestrator.analysis.verdict import verdict
from orchestrator.errors import InputError
from orchestrator.tracking.ledger import Ledger

# words in a metric's name that say higher is better, and those that say lower is better (checked first:
# "error_rate" is an error)
LOWER = ("loss", "err", "mse", "mae", "rmse", "nll", "perplexity", "ppl", "regret", "time", "latency", "cost")
HIGHER = ("acc", "accuracy", "rate", "f1", "auc", "score", "reward", "return", "precision", "recall", "fitness")


def infer_mode(metric: str) -> str | None:
    """ "min" or "max" from the metric's name (its words split at _ . / -), None when no word says."""
    words = [w for w in re.split(r"[_./\-]+", metric.lower()) if w]
    for mode, vocabulary in (("min", LOWER), ("max", HIGHER)):
        if any(w in vocabulary or w.startswith(vocabulary) for w in words):
            return mode
    return None


def parse_metrics(given: list[str] | None) -> list[tuple[str, str | None]]:
    """``--metric`` values: ``name`` or ``name:min`` / ``name:max``; repeated names are refused."""
    out: list[tuple[str, str | None]] = []
    for text in given or []:
        name, colon, mode = text.strip().rpartition(":") if ":" in text else (text.strip(), "", "")
        if colon and mode not in ("min", "max"):
            raise InputError(f"expected NAME, NAME:min or NAME:max, got '{text}'", "--metric")
        if not name:
            raise InputError(f"expected a metric name, got '{text}'", "--metric")
        if any(name == seen for seen, _ in out):
            raise InputError(f"metric '{name}' given twice", "--metric")
        out.append((name, mode or None))
    return out


@dataclass
class Study:
    """One report per metric, their comparisons Holm-corrected together; with several metrics, the
    aggregate over them."""

    reports: list[Report]
    alpha: float
    family: int  # the comparisons whose p-values were corrected together
    aggregate: robust.Aggregate | None = None
    notes: list[str] = field(default_factory=list)
    table_path: str | None = None  # where `--table` wrote the paper table
    curves: CurveSet | None = None  # `--curves`
    experiment: Experiment | None = field(default=None, repr=False)  # the store as read, for --curves

    @property
    def report(self) -> Report:
        return self.reports[0]

    def to_dict(self) -> dict[str, Any]:
        """One metric: the report's JSON (as before several metrics existed) with the aggregate fields;
        several: the reports side by side."""
        extra = {
            "family": self.family,
            "aggregate": self.aggregate.to_dict() if self.aggregate else None,
            "table": self.table_path,
            "curves": self.curves.to_dict() if self.curves else None,
        }
        if len(self.reports) == 1:
            return {**self.report.to_dict(), **extra}
        return {
            "experiment": self.report.experiment,
            "metrics": [r.metric for r in self.reports],
            "modes": [r.mode for r in self.reports],
            "alpha": self.alpha,
            "correction": "holm",
            "notes": self.notes,
            **extra,
            "reports": [r.to_dict() for r in self.reports],
        }


def finite(values: list[float]) -> list[float]:
    return [v for v in values if math.isfinite(v)]


def run_study(
    ledger: Ledger,
    experiment: str,
    metrics: list[str] | None = None,
    mode: str | None = None,
    baseline: str | None = None,
    by: list[str] | None = None,
    alpha: float = 0.05,
    curve: str | None = None,
    confidence: float = stats.CONFIDENCE,
    where: str | None = None,
    test: str = "t",
) -> Study:
    if test not in stats.PRIMARY:
        raise InputError(f"expected one of: {', '.join(stats.PRIMARY)}, got '{test}'", "--test")
    if not 0 < alpha < 1:
        raise InputError(f"expected a number between 0 and 1, got {alpha}", "--alpha")
    if mode is not None and mode not in ("min", "max"):
        raise InputError(f"expected 'min' or 'max', got '{mode}'", "--mode")
    asked = parse_metrics(metrics)
    if mode is not None and len(asked) > 1:
        raise InputError("--mode applies to one metric; with several, say each one's: --metric NAME:max", "--mode")
    exp = Experiment.read(ledger, experiment, where)
    main_metric, main_mode = default_metric(exp.parents) if not asked or any(m is None for _, m in asked) else ("", "")
    asked = asked or [(main_metric, None)]
    reports = []
    for name, given in asked:
        notes: list[str] = []
        chosen = given or mode or (main_mode if name == main_metric else infer_mode(name))
        if chosen is None:
            chosen = "min"
            notes.append(f"assumed lower {name} is better; pass --metric {name}:max if higher is better")
        elif not given and not mode and name != main_metric:
            better = "lower" if chosen == "min" else "higher"
            notes.append(f"assumed {better} {name} is better (from its name); --metric {name}:{chosen} says so")
        reports.append(metric_report(exp, name, chosen, notes, baseline, by, alpha, curve, confidence, test))

    every = [c for r in reports for c in r.comparisons]
    stats.correct(every, alpha)  # one family: every comparison of every metric
    for r in reports:
        for c in r.comparisons:
            c.outcome, c.verdict = verdict(c, r.metric, r.mode, alpha, confidence)
    study = Study(reports, alpha, sum(1 for c in every if c.p_value is not None), experiment=exp)
    if len(reports) > 1:
        scores = {r.metric: {g.name: finite(g.values) for g in r.groups} for r in reports}
        pairs = [(c.a, c.b) for c in reports[0].comparisons]
        study.aggregate = robust.aggregate(scores, {r.metric: r.mode for r in reports}, pairs, confidence)
        study.notes.append(
            f"Holm's correction over all {study.family} comparisons of the {len(reports)} metrics together"
        )
    return study


def write_table(study: Study, kind: str, path: Path | None) -> Path:
    """``--table latex|markdown``: the paper table, to ``path`` (default: compare-<experiment>.tex / .md)."""
    from orchestrator.analysis import papertable

    if kind not in papertable.KINDS:
        raise InputError(f"expected one of: {', '.join(papertable.KINDS)}, got '{kind}'", "--table")
    target = path or Path(f"compare-{study.report.experiment}{papertable.KINDS[kind]}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(papertable.render(study, kind))
    study.table_path = str(target)
    return target
