"""What `orch compare` writes back to MLflow (unless ``--no-log``): the aggregates of each group on its parent
run, with ``--curves`` each per-step metric's mean and interval per step (one curve per group with its band
in MLflow's chart view), and per metric a comparison run holding the report, plots and table as artifacts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.analysis.compare import Report
from orchestrator.analysis.interval import aggregates
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.records import BATCH, FINISHED, RUNNING, Role, Tag, chunks, role_filter, search_all

if TYPE_CHECKING:
    from orchestrator.analysis.curves import CurveSet
    from orchestrator.analysis.study import Study


def curve_metrics(curves: CurveSet, report: Report) -> dict[str, list[tuple[str, float, int]]]:
    """parent run id -> (name, value, step) of ``<metric>_mean``, ``_ci_low``, ``_ci_high`` at every step
    of its group's curves (a group merged by ``--by`` has no parent of its own: none)."""
    out: dict[str, list[tuple[str, float, int]]] = {}
    for metric, by_group in curves.curves.items():
        for g in report.groups:
            curve = by_group.get(g.name)
            if curve is None or len(g.parents) != 1:
                continue
            rows = out.setdefault(g.parents[0], [])
            for step, mean, low, high in zip(curve.steps, curve.mean, curve.low, curve.high, strict=True):
                for suffix, value in (("mean", mean), ("ci_low", low), ("ci_high", high)):
                    if value is not None:
                        rows.append((f"{metric}_{suffix}", float(value), step))
    return out


def log_curves(ledger: Ledger, curves: CurveSet, report: Report, stamps: dict[str, int]) -> int:
    """The curves on the parents, each point stamped with its parent's start time: a second `orch compare
    --curves` over the same seeds writes exactly the same rows, which MLflow's SQL store keeps once.
    Returns the number of points written."""
    from mlflow.entities import Metric

    written = 0
    for run_id, rows in curve_metrics(curves, report).items():
        stamp = stamps.get(run_id, 0)
        for batch in chunks(rows, BATCH):
            ledger.client.log_batch(run_id, metrics=[Metric(k, v, stamp, step) for k, v, step in batch])
        written += len(rows)
    return written


def publish(ledger: Ledger, study: Study, out: Path | None, log: bool, with_curves: bool) -> None:
    """``--curves``, then the documents (report, plots, table) of each metric, kept in ``out`` (a folder per
    metric when there are several) and, with ``log``, logged to MLflow."""
    import json
    import tempfile

    from orchestrator.analysis import curves
    from orchestrator.analysis import report as documents

    if with_curves and study.experiment is not None:
        study.curves = curves.build(study.experiment, study.report)
    if not (log or out):  # the plots cost a matplotlib import: only when they go somewhere
        return
    with tempfile.TemporaryDirectory(prefix="orch-compare-") as tmp:
        root = out or Path(tmp)
        for report in study.reports:
            files = root / report.metric.replace("/", "_") if len(study.reports) > 1 else root
            documents.write(report, files, study)
            if log:
                log_to_mlflow(ledger, report, files)
                (files / "compare.json").write_text(json.dumps(report.to_dict(), indent=1))
    if log and study.curves is not None and study.experiment is not None:
        stamps = {p.info.run_id: p.info.start_time or 0 for p in study.experiment.parents}
        log_curves(ledger, study.curves, study.report, stamps)


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
