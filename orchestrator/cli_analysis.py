"""The `orch` commands that read results: `orch compare` (across seeds, with tests), `orch tune` (a Ray Tune
sweep and its best configuration), `orch reproduce` (a run again from its snapshot) and `orch workloads`
(registered on the main app by ``orchestrator.cli``)."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from orchestrator.console import console, err_console
from orchestrator.errors import InputError, did_you_mean
from orchestrator.options import (
    ExperimentArg,
    JsonOpt,
    RayAddressOpt,
    SetOpt,
    SpecArg,
    UriOpt,
    app,
    handles_input_errors,
)
from orchestrator.vocabulary import TrialStatus


@app.command()
@handles_input_errors
def tune(
    spec_path: SpecArg,
    sets: SetOpt = None,
    tracking_uri: UriOpt = None,
    ray_address: RayAddressOpt = None,
    resume: Annotated[bool, typer.Option("--resume", help="continue this spec's last sweep (its driver died)")] = False,
    best: Annotated[Path, typer.Option("--best", help="where to write the best trial's spec")] = Path("best.yaml"),
    top: Annotated[int, typer.Option("--top", help="trials shown in the table")] = 10,
):
    """A Ray Tune sweep over the spec's `tune:` section; MLflow: one parent run, one child per trial.
    Writes the best trial as a complete spec: validate it with `orch submit best.yaml --seeds N`."""
    from orchestrator import render_tune
    from orchestrator.tune.sweep import run_sweep

    # a live trial table; to a file or a pipe, one line per ended trial
    board = render_tune.TrialBoard() if console.is_terminal else contextlib.nullcontext(None)
    with board as sink:
        result = run_sweep(
            spec_path,
            sets=sets,
            tracking_uri=tracking_uri,
            ray_address=ray_address,
            resume=resume,
            best_path=best,
            echo=console.print,
            sink=sink,
        )
    console.print(render_tune.trials_table(result, top))
    if result.importance:
        console.print(f"which params mattered for {result.metric}:")
        console.print(render_tune.importance_table(result.importance))
    counts = Counter(r.status for r in result.rows)
    console.print(
        f"{len(result.rows)} trials: {counts[TrialStatus.FINISHED]} finished, {counts[TrialStatus.STOPPED]} stopped "
        f"early, {counts[TrialStatus.FAILED]} failed  (MLflow parent run {result.parent_run_id})"
    )
    if result.best_yaml is None or result.best is None:
        err_console.print("[red]no trial finished[/]: nothing to write; see the failed trials in MLflow")
        raise typer.Exit(1)
    console.print(
        f"best: trial {result.best.trial_id}, {result.metric} = {result.best.score:.6g} -> "
        f"[bold]{result.best_yaml}[/]; validate it: orch submit {result.best_yaml} --seeds 10"
    )


@app.command()
@handles_input_errors
def reproduce(
    run: Annotated[str, typer.Argument(help="MLflow run id or orch run key")],
    tracking_uri: UriOpt = None,
    as_json: JsonOpt = False,
):
    """Run a recorded run again from its code snapshot and params (nothing is recorded) and say whether
    every metric is identical. Exit code 1 when one differs."""
    from orchestrator import api
    from orchestrator.reproduce import to_dict

    result = api.reproduce(run, tracking_uri)
    if as_json:
        print(json.dumps(to_dict(result), indent=1))
    elif result.identical:
        console.print(
            f"[green]identical[/]: {result.compared} metric values of run {result.record.run_id} "
            f"(code {result.code or 'live'})"
        )
    else:
        console.print(
            f"[red]differs[/]: {len(result.differences)} of {result.compared} values (code {result.code or 'live'})"
        )
        for line in result.differences[:10]:
            console.print(f"  {line}", highlight=False, markup=False)
    if not result.identical:
        raise typer.Exit(1)


@app.command()
@handles_input_errors
def compare(
    experiment: ExperimentArg,
    metric: Annotated[
        list[str] | None,
        typer.Option(
            "--metric",
            help="final metric, NAME or NAME:min / NAME:max (default: the spec's); repeat it to compare "
            "several at once, Holm-corrected together",
        ),
    ] = None,
    mode: Annotated[str | None, typer.Option("--mode", help="min | max: which way is better (one metric)")] = None,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="compare every group to this one (default: all pairs)")
    ] = None,
    by: Annotated[
        str | None,
        typer.Option(
            "--by",
            help="group by these params/tags, comma-separated: "
            "variant, grid, params.X, tags.X (default: variant x grid point)",
        ),
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="significance level, after Holm correction")] = 0.05,
    curve: Annotated[str | None, typer.Option("--curve", help="per-step metric for the learning curves")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="also keep the report and plots in this folder")] = None,
    log: Annotated[
        bool,
        typer.Option(
            "--log/--no-log",
            help="log the report to MLflow (a comparison run, and the aggregates on each group's parent run)",
        ),
    ] = True,
    where: Annotated[
        str | None,
        typer.Option("--where", help='only the groups matching this MLflow filter, e.g. "params.noise > 0.1"'),
    ] = None,
    test: Annotated[
        str,
        typer.Option(
            "--test",
            help="the primary test: t (paired t-test on shared seeds, "
            "else Welch's) or permutation (Fisher's randomization test on shared "
            "seeds, else the permutation test)",
        ),
    ] = "t",
    table: Annotated[
        str | None,
        typer.Option("--table", help="also write the paper's significance table: latex or markdown"),
    ] = None,
    table_out: Annotated[
        Path | None,
        typer.Option("--table-out", help="where --table writes (default: compare-EXPERIMENT.tex / .md here)"),
    ] = None,
    curves: Annotated[
        bool,
        typer.Option(
            "--curves",
            help="every per-step metric's mean and interval per group: on the group parents in MLflow, and drawn",
        ),
    ] = False,
    as_json: JsonOpt = False,
    tracking_uri: UriOpt = None,
):
    """Do the groups differ across seeds? Per group statistics, tests against the baseline, plain verdicts."""
    from orchestrator.experiments import compare_study

    if table_out is not None and table is None:
        raise InputError("--table-out needs --table latex or --table markdown", "--table-out")
    study = compare_study(
        experiment,
        metrics=metric,
        mode=mode,
        baseline=baseline,
        by=by.split(",") if by else None,
        alpha=alpha,
        curve=curve,
        log=log,
        out=out,
        tracking_uri=tracking_uri,
        where=where,
        test=test,
        table=table,
        table_out=table_out,
        curves=curves,
    )
    if as_json:
        print(json.dumps(study.to_dict(), indent=1))
        return
    from orchestrator.analysis.report import print_study

    print_study(study, console)
    if log:
        for r in study.reports:
            console.print(
                f"report logged to MLflow run {r.compare_run_id} ('compare {r.metric}'); browse it with: orch ui"
            )
    if study.curves is not None:
        where_to = "on each group's parent run" if log else "in the report (--no-log: not in MLflow)"
        console.print(f"curves of {', '.join(study.curves.metrics) or 'no per-step metric'}: {where_to}")
    if study.table_path:
        console.print(f"table in {study.table_path}")
    if out:
        console.print(f"report and plots in {out}")


@app.command()
@handles_input_errors
def workloads(name: Annotated[str | None, typer.Argument(help="one workload (default: all)")] = None):
    """The registered workloads, their main metric and their params with defaults."""
    from orchestrator import render
    from orchestrator.spec import registry

    known = registry.available()
    if name is not None and name not in known:
        raise InputError(f"unknown workload '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}", "NAME")
    for each in [name] if name else known:
        console.print(render.workload_table(each))
