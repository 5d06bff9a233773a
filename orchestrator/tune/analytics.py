"""A finished sweep's analytics, on its parent run in MLflow: which params mattered (hyperparameter importance by
Optuna's evaluators, fANOVA and PED-ANOVA, over the finished trials: ``importance/<evaluator>/<param>`` metrics
and ``analytics/importance.json``) and how the trials spread over the space (``analytics/parallel_coordinates.png``,
Optuna's plot of them). The finished trials become an Optuna study (``optuna.trial.create_trial``) whatever
searched them, so Optuna's own evaluators and plots do the work. ``orch status`` shows the importances.

A PBT trial's params changed on the way; its final params stand for it here (its schedule is in its run)."""

from __future__ import annotations

import json
import math
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.tune.section import Dimension, TuneConfig

if TYPE_CHECKING:
    import optuna

    from orchestrator.tune.sweep import TrialRow

IMPORTANCE_PREFIX = "importance/"  # the parent run's metrics: importance/<evaluator>/<param>
EVALUATORS = ("fanova", "ped_anova")


def _distribution(dim: Dimension, values: list[Any]):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dim.kind in ("choice", "grid"):
        choices = list(dict.fromkeys([*dim.args, *values]))  # a PBT list mutation stays in the list
        return CategoricalDistribution(choices)
    low, high = dim.args
    low, high = min(low, *values), max(high if dim.kind != "randint" else high - 1, *values)
    if dim.kind == "randint":
        return IntDistribution(int(low), int(high))
    return FloatDistribution(float(low), float(high), log=dim.kind == "loguniform")


def study_of(rows: list[TrialRow], config: TuneConfig) -> optuna.Study | None:
    """The finished trials as an Optuna study over the dimensions that varied (None: fewer than 2 trials)."""
    import optuna

    finished = [r for r in rows if r.score is not None and math.isfinite(r.score)]
    dims = {d.key: d for d in (*config.dimensions, *config.mutations)}
    varied = {
        key: dim
        for key, dim in dims.items()
        if len({json.dumps(r.config.get(key)) for r in finished if key in r.config}) > 1
    }
    if len(finished) < 2 or not varied:
        return None
    distributions = {k: _distribution(d, [r.config[k] for r in finished if k in r.config]) for k, d in varied.items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="minimize" if config.mode == "min" else "maximize")
    for row in finished:
        params = {k: row.config[k] for k in distributions if k in row.config}
        study.add_trial(
            optuna.trial.create_trial(
                params=params, distributions={k: distributions[k] for k in params}, value=row.score
            )
        )
    return study


def importances(study: optuna.Study, seed: int = 0) -> dict[str, dict[str, float]]:
    """evaluator -> param -> importance (normalised: they sum to 1). An evaluator that cannot judge so few
    trials is left out."""
    import optuna

    evaluators = {
        "fanova": optuna.importance.FanovaImportanceEvaluator(seed=seed),
        "ped_anova": optuna.importance.PedAnovaImportanceEvaluator(),
    }
    out: dict[str, dict[str, float]] = {}
    for name, evaluator in evaluators.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning (PED-ANOVA), few-trials notes
            try:
                found = optuna.importance.get_param_importances(study, evaluator=evaluator, normalize=True)
            except (ValueError, RuntimeError, ZeroDivisionError):
                continue
        out[name] = {k: float(v) for k, v in found.items()}
    return out


def parallel_coordinates(study: optuna.Study, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna's matplotlib plots are marked experimental
        axes = plot_parallel_coordinate(study)
    axes.set_title(title)
    from matplotlib.figure import Figure

    figure = axes.get_figure()
    assert isinstance(figure, Figure)  # optuna draws on a figure of its own
    figure.set_size_inches(max(6.0, 1.6 * (len(study.best_params) + 1)), 4.5)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)
    return path


def record(ledger, parent_run_id: str, rows: list[TrialRow], config: TuneConfig, seed: int = 0) -> dict[str, Any]:
    """Importances as metrics and JSON, the parallel-coordinates plot as an artifact, on the sweep's parent
    run. Returns the importances ({} when fewer than 2 trials finished, or nothing varied)."""
    study = study_of(rows, config)
    if study is None:
        return {}
    found = importances(study, seed)
    values = {f"{IMPORTANCE_PREFIX}{name}/{param}": v for name, params in found.items() for param, v in params.items()}
    if values:
        ledger.log_values(parent_run_id, values)
    summary = {"metric": config.metric, "mode": config.mode, "trials": len(study.trials), "importance": found}
    ledger.log_text(parent_run_id, json.dumps(summary, indent=1), "analytics/importance.json")
    with tempfile.TemporaryDirectory() as tmp:
        plot = parallel_coordinates(study, Path(tmp) / "parallel_coordinates.png", f"trials by {config.metric}")
        ledger.client.log_artifact(parent_run_id, str(plot), "analytics")
    return found
