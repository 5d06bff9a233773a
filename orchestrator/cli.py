"""The `orch` command line: typer commands that parse options, call ``orchestrator.api`` and draw with
``orchestrator.render``. Bad input prints `error: <file>: <field>: <what was expected>` and exits 2."""

from __future__ import annotations

import contextlib
import json
import sys
from collections import deque
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from orchestrator.console import console, err_console
from orchestrator.options import (
    ExperimentArg,
    JsonOpt,
    RayAddressOpt,
    SetOpt,
    SpecArg,
    UriOpt,
    app,
    handles_input_errors,
    stop_on_termination,
)
from orchestrator.tracking.records import FINISHED, Tag
from orchestrator.vocabulary import Event


@app.command()
@handles_input_errors
def submit(
    spec_path: SpecArg,
    seeds: Annotated[int | None, typer.Option("--seeds", help="number of seeds (base+0 .. base+N-1)")] = None,
    backend: Annotated[
        str | None,
        typer.Option("--backend", help="local, slurm, ray or a backend an installed package registers (orch.backends)"),
    ] = None,
    sets: SetOpt = None,
    tracking_uri: UriOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and exit")] = False,
    max_parallel: Annotated[int | None, typer.Option("--max-parallel", help="local: runs at once")] = None,
    ray_address: RayAddressOpt = None,
    wait: Annotated[
        bool,
        typer.Option("--wait/--no-wait", help="follow queued jobs until they end (slurm; local and ray always follow)"),
    ] = False,
    cluster: Annotated[
        str | None, typer.Option("--cluster", help="slurm: cluster profile (cluster/<name>.yaml)")
    ] = None,
):
    """Run every seed of every variant and grid point that MLflow does not already hold as FINISHED."""
    from orchestrator import api, render

    sub = api.plan_submission(
        spec_path,
        seeds=seeds,
        backend=backend,
        sets=sets,
        tracking_uri=tracking_uri,
        cluster=cluster,
        max_parallel=max_parallel,
        ray_address=ray_address,
    )
    if dry_run:
        planned = sub.preview()
        console.print(render.plan_table(sub.runs, planned))
        for line in render.drift_lines({k: (d.runs, d.changes) for k, d in planned.drifted.items()}):
            err_console.print(f"[yellow]{escape(line)}[/]")
        extra = sub.backend_class.preview(sub.spec, len(planned.todo))  # Slurm: the job scripts; nothing queued
        if extra:
            console.print(extra, markup=False, highlight=False)
        return
    reconciled = sub.reconcile()
    assert sub.backend is not None
    described = sub.backend.describe()
    if described:
        console.print(described, highlight=False)
    console.print(
        f"[bold]{sub.spec.name}[/]: {len(sub.runs)} runs planned, {len(reconciled.done)} already finished, "
        f"{len(reconciled.active)} in progress, [bold]{len(reconciled.todo)} to run[/] on {sub.spec.backend}  "
        f"(tracking: {sub.uri})"
    )
    for line in render.drift_lines({k: (d.runs, d.changes) for k, d in reconciled.drifted.items()}):
        err_console.print(f"[yellow]{escape(line)}[/]")
    stop_on_termination()
    try:
        launched = sub.launch()
    except KeyboardInterrupt:  # local runs start before they are recorded: recorded, then cancelled
        err_console.print(
            "[yellow]cancelled: the started runs were stopped and recorded as KILLED; "
            "submit again to finish what is missing[/]"
        )
        raise typer.Exit(130) from None
    if not launched:
        _print_groups(sub.ledger, sub.experiment_id, sub.spec.name)
        return
    if not sub.backend.blocking and not wait:
        arrays = sorted({j.split("_")[0] for j in sub.job_ids if "_" in j})  # Slurm arrays (a Ray driver: none)
        where = f", arrays {', '.join(arrays)}" if arrays else ""
        console.print(
            f"queued {len(sub.prepared)} runs (job ids {sub.job_ids[0]} .. {sub.job_ids[-1]}{where}); follow "
            f"with: orch status {sub.spec.name}  (orch logs RUN, orch cancel {sub.spec.name})"
        )
        return
    try:
        with render.ProgressBar(len(sub.prepared)) as bar:
            results = sub.follow(bar)
    except KeyboardInterrupt:
        sub.stop()  # the runs follow() had not taken over yet (a Ctrl-C just before it)
        if not sub.backend.blocking:
            err_console.print(
                f"[yellow]stopped following; the jobs stay queued: orch status {sub.spec.name}, "
                f"or orch cancel {sub.spec.name}[/]"
            )
        else:
            err_console.print(
                "[yellow]cancelled: running runs were stopped and recorded as KILLED; "
                "submit again to finish what is missing[/]"
            )
        raise typer.Exit(130) from None
    _print_groups(sub.ledger, sub.experiment_id, sub.spec.name)
    failed = [rid for rid, status in results.items() if status != FINISHED]
    if failed:
        err_console.print(f"[red]{len(failed)} run(s) did not finish[/]:")
        assert sub.ledger is not None
        for run_id in failed[:5]:
            record = sub.ledger.get(run_id)
            err_console.print(
                f"  {record.tags.get('mlflow.runName', run_id)}  {run_id}  {record.status}: "
                f"{record.tags.get(Tag.ERROR, '')}",
                highlight=False,
                markup=False,
            )
        err_console.print(f"{'  ...' if len(failed) > 5 else ''}the output and traceback of each: orch logs RUN_ID")
        raise typer.Exit(1)


def _print_groups(ledger, experiment_id: str, name: str) -> None:
    """The status table, then what to run next: a comparison across seeds once groups have finished runs."""
    from orchestrator import render
    from orchestrator.analysis.status import experiment_status

    groups = experiment_status(ledger, experiment_id)
    console.print(render.status_table(name, groups))
    if sum(g.finished > 0 for g in groups) > 1:
        console.print(
            f"next: orch compare {name}   (across seeds, with a statistical test; --baseline GROUP)", highlight=False
        )


@app.command("run")
@handles_input_errors
def run_one(
    spec_path: SpecArg,
    seed: Annotated[int, typer.Option("--seed", help="the seed to run")] = 0,
    variant: Annotated[str | None, typer.Option("--variant", help="which variant (default: first)")] = None,
    sets: SetOpt = None,
    tracking_uri: UriOpt = None,
    force: Annotated[
        bool, typer.Option("--force", help="run a seed that already FINISHED again (the old record is superseded)")
    ] = False,
    pdb: Annotated[
        bool,
        typer.Option(
            "--pdb",
            help="on a workload error, a pdb post-mortem at the failing line (the run is recorded FAILED first)",
        ),
    ] = False,
):
    """One run, in this process (a debugger and print() work), recorded in MLflow like any other."""
    from orchestrator import api

    def post_mortem(err: BaseException) -> None:
        import pdb as debugger

        debugger.post_mortem(err.__traceback__)

    _run, status, final = api.run_in_process(
        spec_path,
        seed,
        variant,
        sets,
        tracking_uri,
        force=force,
        on_failure=post_mortem if pdb else None,
        started=lambda run, run_id: console.print(
            f"running {escape(run.label)} seed {run.seed} in this process (run {run_id})"
        ),
    )
    console.print(f"{status}: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(final.metrics.items())))
    if status != FINISHED:
        console.print(f"error: {escape(final.tags.get(Tag.ERROR, ''))}")
        raise typer.Exit(1)


@app.command()
@handles_input_errors
def status(
    experiment: ExperimentArg,
    tracking_uri: UriOpt = None,
    as_json: JsonOpt = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="redraw every 2 s, with each running run's step and rate, until nothing runs (Ctrl-C stops)",
        ),
    ] = False,
    where: Annotated[
        str | None, typer.Option("--where", help='only the groups matching this filter, e.g. "params.noise > 0.1"')
    ] = None,
    runs: Annotated[
        bool,
        typer.Option(
            "--runs",
            help="also list every seed run: its id (for orch logs, orch reproduce), seed, status and main metric",
        ),
    ] = False,
    show_costs: Annotated[
        bool,
        typer.Option("--costs", help="per group: wall, CPU and GPU hours of every attempt, and the memory peaks"),
    ] = False,
):
    """Per group: finished / running / queued / failed / killed / missing runs, and the main metric's mean; per
    `orch tune` sweep: trials finished / running / stopped early / failed, and the best score."""
    from orchestrator import api, render, render_tune

    state = api.status(experiment, tracking_uri, where)
    if as_json:
        print(json.dumps(state.to_dict(), indent=1))
        return
    if watch:
        with contextlib.suppress(KeyboardInterrupt):
            render.watch_status(lambda: api.status(experiment, tracking_uri, where))
        return
    if state.groups or not state.sweeps:
        console.print(render.status_table(state.name, state.groups))
        render.print_stalled(state.groups)
        if show_costs:
            console.print(render.costs_table(state.name, state.groups))
        render.print_status_drift(state.groups)
        if runs:
            console.print(render.runs_table(state.groups, state.records))
        else:
            render.print_active(state.records)
    if state.sweeps:
        render_tune.print_sweeps(state.name, state.sweeps)


@app.command()
@handles_input_errors
def logs(
    run: Annotated[str, typer.Argument(help="MLflow run id or orch run key")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="lines of each log to show")] = 40,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing the run's output until it ends")
    ] = False,
    tracking_uri: UriOpt = None,
):
    """The tail of a run's stdout and stderr (from its run directory), and the traceback of a failed run."""
    import time

    from orchestrator import api
    from orchestrator.job.journal import last_event

    record, run_dir, files = api.run_logs(run, tracking_uri)
    console.print(f"[bold]{record.run_id}[/] {record.status}  {run_dir.path}")
    if record.tags.get(Tag.ERROR):
        console.print(f"[red]error:[/] {escape(record.tags[Tag.ERROR])}")
    for log in files:
        console.rule(log.name)
        if log.exists():
            with open(log, errors="replace") as f:
                sys.stdout.write("".join(deque(f, maxlen=lines)))
        else:
            console.print("(empty)")
    if follow:  # both streams, from where the tails stopped, until the journal records the end
        offsets = {log: log.stat().st_size if log.exists() else 0 for log in files[:2]}
        while True:
            ended = last_event(run_dir.journal, Event.END) is not None
            for log, offset in offsets.items():
                if log.exists() and log.stat().st_size > offset:
                    with open(log, errors="replace") as f:
                        f.seek(offset)
                        sys.stdout.write(f.read())
                        offsets[log] = f.tell()
            sys.stdout.flush()
            if ended:
                break
            time.sleep(0.5)
    end = last_event(run_dir.journal, Event.END)
    if end and end.get("traceback"):
        console.rule("traceback")
        sys.stdout.write(end["traceback"])


@app.command()
@handles_input_errors
def sync(
    workdir: Annotated[Path, typer.Option("--workdir", help="root of the run directories")] = Path("mlruns/jobs"),
    tracking_uri: UriOpt = None,
):
    """Ingest run journals that did not reach MLflow (runs on nodes without network, a crashed orchestrator)."""
    from orchestrator import api

    counts = api.sync(workdir, tracking_uri)
    console.print(
        f"synced {counts['ingested']} run directories with new journal lines ({counts['ended']} ended) under {workdir}"
    )


@app.command()
@handles_input_errors
def cancel(
    experiment: ExperimentArg,
    run: Annotated[
        str | None, typer.Option("--run", help="only this run (run id, key, Slurm job id) or group (group hash)")
    ] = None,
    tracking_uri: UriOpt = None,
):
    """Stop the queued and running runs of an experiment (or one run); they end KILLED."""
    from orchestrator import api

    name, count = api.cancel(experiment, run, tracking_uri)
    console.print(f"cancelled {count} run(s) of {name}")


from orchestrator import cli_analysis, cli_tracking  # noqa: E402  (register their commands on `app`)


def main() -> None:
    """The `orch` command: typer's app, then a quick exit. Tearing the interpreter down after MLflow and
    SQLAlchemy were imported costs 0.7-1.3 s here (finalising ~2,000 modules) and does nothing a command
    needs: the threads that are not daemons are joined and the atexit handlers run (multiprocessing's,
    logging's) as in a normal exit, the streams are flushed, then the process ends."""
    import atexit
    import os
    import threading

    try:
        app()
        code = 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            code = stop.code or 0
        else:  # SystemExit("message"): Python prints it and exits 1
            print(stop.code, file=sys.stderr)
            code = 1
    # What the interpreter does first at exit: threading's own exit hooks, then it joins the threads that are not
    # daemons. The hooks tell thread pools to stop (MLflow's artifact uploads): joining their idle workers
    # without them waited forever (orch export printed its result and never returned).
    threading._shutdown()  # type: ignore[attr-defined]
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe (orch status | head): nothing more to say
            stream.flush()
    os._exit(code)


__all__ = ["app", "cli_analysis", "cli_tracking", "main"]
