"""The `orch` command line. Bad input prints `error: <file>: <field>: <what was expected>` and exits 2."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from orchestrator.backends.base import make as make_backend
from orchestrator.errors import InputError
from orchestrator.tracking.records import FAILED, FINISHED, RUNNING, SCHEDULED, Tag

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="orch: declare experiments in YAML, run every seed locally, on Slurm or on Ray, "
                       "record everything in MLflow, and compare across seeds.")
console = Console()
err_console = Console(stderr=True)

SpecArg = Annotated[Path, typer.Argument(help="the experiment spec (YAML)")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="override KEY=VALUE (YAML-typed), repeatable")]
UriOpt = Annotated[Optional[str], typer.Option("--tracking-uri", help="MLflow tracking URI (default: spec, then "
                                                "MLFLOW_TRACKING_URI, then sqlite:///mlruns/mlflow.db)")]


def handles_input_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper


class RichSink:
    def __init__(self, progress: Progress, task):
        self.progress, self.task = progress, task

    def update(self, done: int, running: int, failed: int, total: int) -> None:
        self.progress.update(self.task, completed=done, total=total,
                             description=f"runs  [green]{done - failed} done[/]  [cyan]{running} running[/]  "
                                         f"[red]{failed} failed[/]")


def _resolve_uri(cli_uri: str | None, spec_uri: str | None = None) -> str:
    from orchestrator.tracking.ledger import resolve_uri
    return resolve_uri(cli_uri, spec_uri)


def _plan_table(runs, reconciled=None) -> Table:
    state = {}
    if reconciled is not None:
        state.update({r.key: "done" for r in reconciled.done})
        state.update({r.key: "active" for r in reconciled.active})
        state.update({r.key: ("retry" if prev else "new") for r, prev in reconciled.todo})
    table = Table(title=f"plan: {len(runs)} runs")
    for col in ("key", "group", "variant", "grid point", "seed", "state"):
        table.add_column(col, no_wrap=True)
    for run in runs:
        point = ", ".join(f"{k}={v}" for k, v in run.grid_point.items())
        table.add_row(run.key, run.group, run.variant, point, str(run.seed), state.get(run.key, "new"))
    return table


@app.command()
@handles_input_errors
def submit(spec_path: SpecArg,
           seeds: Annotated[Optional[int], typer.Option("--seeds", help="number of seeds (base+0 .. base+N-1)")] = None,
           backend: Annotated[Optional[str], typer.Option("--backend", help="local | slurm | ray")] = None,
           sets: SetOpt = None, tracking_uri: UriOpt = None,
           dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan and exit")] = False,
           max_parallel: Annotated[Optional[int], typer.Option("--max-parallel", help="local: runs at once")] = None,
           ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="ray: a running cluster "
                                  "('auto' or host:port; default RAY_ADDRESS, cluster/ray.yaml, else a local Ray)")] = None,
           wait: Annotated[bool, typer.Option("--wait/--no-wait", help="follow queued jobs until they end "
                                              "(slurm; local and ray always follow)")] = False,
           cluster: Annotated[Optional[str], typer.Option("--cluster", help="slurm: cluster profile "
                                                          "(cluster/<name>.yaml)")] = None):
    """Run every seed of every variant and grid point that MLflow does not already hold as FINISHED."""
    from orchestrator import driver
    from orchestrator.spec.plan import expand
    from orchestrator.spec.spec import load_spec

    if cluster:
        sets = [*(sets or []), f"cluster={cluster}"]
    spec = load_spec(spec_path, sets=sets, seeds=seeds, backend=backend)
    if spec.backend == "slurm":  # the profile may put the run directories on the shared filesystem
        from orchestrator.spec.profiles import apply_profile
        spec = apply_profile(spec)
    runs = expand(spec)
    if max_parallel is not None and max_parallel < 1:
        raise InputError(f"expected at least 1, got {max_parallel}", "--max-parallel")
    uri = _resolve_uri(tracking_uri, spec.tracking.uri)
    if dry_run:
        console.print(_plan_table(runs))
        return

    from orchestrator.tracking.ledger import Ledger
    backend_instance = make_backend(spec.backend, spec, max_parallel=max_parallel, ray_address=ray_address)
    ledger = Ledger(uri)  # after the backend: slurm refuses an impossible request before anything exists
    experiment_id = ledger.experiment_id(spec.name, create=True)
    records = driver.refresh(ledger, ledger.runs(experiment_id), lambda name: backend_instance
                             if name == spec.backend else make_backend(name))
    reconciled = driver.reconcile(runs, records)
    console.print(f"[bold]{spec.name}[/]: {len(runs)} runs planned, {len(reconciled.done)} already finished, "
                  f"{len(reconciled.active)} in progress, [bold]{len(reconciled.todo)} to run[/] on {spec.backend}  "
                  f"(tracking: {uri})")
    prepared = driver.prepare(ledger, experiment_id, spec, reconciled.todo, spec.backend,
                              job_id=getattr(backend_instance, "job_id", ""))
    if not prepared:
        _print_status(ledger, experiment_id, spec.name)
        return
    job_ids = backend_instance.submit([p.run_dir for p in prepared])
    driver.record_job_ids(ledger, prepared, job_ids)
    if not backend_instance.blocking and not wait:
        arrays = sorted({j.split("_")[0] for j in job_ids})
        console.print(f"queued {len(prepared)} jobs (job ids {job_ids[0]} .. {job_ids[-1]}, arrays {', '.join(arrays)}); "
                      f"follow with: orch status {spec.name}  (orch logs RUN, orch cancel {spec.name})")
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("eta"), TimeRemainingColumn(), console=console, transient=False) as progress:
        task = progress.add_task("runs", total=len(prepared))
        try:
            results = driver.follow(ledger, backend_instance, prepared, RichSink(progress, task))
        except KeyboardInterrupt:
            driver.update_groups(ledger, experiment_id)
            if not backend_instance.blocking:
                err_console.print(f"[yellow]stopped following; the jobs stay queued: orch status {spec.name}, "
                                  f"or orch cancel {spec.name}[/]")
                raise typer.Exit(130) from None
            err_console.print("[yellow]cancelled: running runs were stopped and recorded as KILLED; "
                              "submit again to finish what is missing[/]")
            raise typer.Exit(130) from None
    driver.update_groups(ledger, experiment_id)
    _print_status(ledger, experiment_id, spec.name)
    failed = [rid for rid, status in results.items() if status != FINISHED]
    if failed:
        err_console.print(f"[red]{len(failed)} run(s) did not finish[/]; see `orch logs RUN_ID`, e.g. {failed[0]}")
        raise typer.Exit(1)


@app.command("run")
@handles_input_errors
def run_one(spec_path: SpecArg, seed: Annotated[int, typer.Option("--seed", help="the seed to run")] = 0,
            variant: Annotated[Optional[str], typer.Option("--variant", help="which variant (default: first)")] = None,
            sets: SetOpt = None, tracking_uri: UriOpt = None):
    """One run, in this process (a debugger and print() work), recorded in MLflow like any other."""
    from orchestrator import driver
    from orchestrator.errors import did_you_mean
    from orchestrator.job import worker
    from orchestrator.spec.plan import expand
    from orchestrator.spec.spec import load_spec
    from orchestrator.tracking.ledger import Ledger

    spec = load_spec(spec_path, sets=sets)
    runs = expand(spec.model_copy(update={"seeds": spec.seeds.model_copy(update={"count": 1, "base": seed})}))
    names = list(dict.fromkeys(r.variant for r in runs))
    chosen = variant or names[0]
    if chosen not in names:
        raise InputError(f"unknown variant '{chosen}'{did_you_mean(chosen, names)}; known: {', '.join(names)}", "--variant")
    run = next(r for r in runs if r.variant == chosen)
    ledger = Ledger(_resolve_uri(tracking_uri, spec.tracking.uri))
    experiment_id = ledger.experiment_id(spec.name, create=True)
    previous = next(iter(driver.by_key(ledger.runs(experiment_id)).get(run.key, [])), None)
    (prepared,) = driver.prepare(ledger, experiment_id, spec, [(run, previous)], "local", fresh=True)
    ledger.set_tags(prepared.run_id, {Tag.JOB_ID: "in-process", Tag.VIA: "orch run"})
    console.print(f"running {run.label} seed {run.seed} in this process (run {prepared.run_id})")
    status = worker.execute(prepared.run_dir.path)
    ledger.ingest(prepared.run_dir)
    driver.update_groups(ledger, experiment_id)
    final = ledger.get(prepared.run_id)
    console.print(f"{status}: " + ", ".join(f"{k}={v:.6g}" for k, v in sorted(final.metrics.items())))
    if status != FINISHED:
        console.print(f"error: {final.tags.get(Tag.ERROR, '')}")
        raise typer.Exit(1)


@app.command()
@handles_input_errors
def tune(spec_path: SpecArg, sets: SetOpt = None, tracking_uri: UriOpt = None,
         ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="a running Ray cluster ('auto' or "
                                "host:port; default RAY_ADDRESS, cluster/ray.yaml, else a local Ray)")] = None,
         resume: Annotated[bool, typer.Option("--resume", help="continue this spec's last sweep (its driver died)")] = False,
         best: Annotated[Path, typer.Option("--best", help="where to write the best trial's spec")] = Path("best.yaml"),
         top: Annotated[int, typer.Option("--top", help="trials shown in the table")] = 10):
    """A Ray Tune sweep over the spec's `tune:` section; MLflow: one parent run, one child per trial.
    Writes the best trial as a complete spec: validate it with `orch submit best.yaml --seeds N`."""
    from orchestrator.tune.sweep import run_sweep

    result = run_sweep(spec_path, sets=sets, tracking_uri=tracking_uri, ray_address=ray_address, resume=resume,
                       best_path=best, echo=console.print)
    names = list(dict.fromkeys(k for row in result.rows for k in row.config))
    table = Table(title=f"{result.sweep}: top trials by {result.metric} ({result.mode})")
    for col in ("rank", "trial", "status", result.metric, "reports", *names):
        table.add_column(col, justify="left" if col in ("trial", "status") else "right")
    colour = {FINISHED: "green", "STOPPED": "yellow", FAILED: "red"}
    for rank, row in enumerate(result.rows[:top], 1):
        score = f"{row.score:.6g}" if row.score is not None else "-"
        values = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in (row.config.get(n, "") for n in names)]
        table.add_row(str(rank), row.trial_id, f"[{colour[row.status]}]{row.status.lower()}[/]", score,
                      str(row.reports), *values)
    console.print(table)
    counts = {s: sum(1 for r in result.rows if r.status == s) for s in colour}
    console.print(f"{len(result.rows)} trials: {counts['FINISHED']} finished, {counts['STOPPED']} stopped early, "
                  f"{counts['FAILED']} failed  (MLflow parent run {result.parent_run_id})")
    if result.best_yaml is None:
        err_console.print("[red]no trial finished[/]: nothing to write; see the failed trials in MLflow")
        raise typer.Exit(1)
    console.print(f"best: trial {result.best.trial_id}, {result.metric} = {result.best.score:.6g} -> "
                  f"[bold]{result.best_yaml}[/]; validate it: orch submit {result.best_yaml} --seeds 10")


def _experiment_name(name_or_spec: str) -> tuple[str, str | None]:
    path = Path(name_or_spec)
    if path.suffix in (".yaml", ".yml"):
        from orchestrator.spec.spec import load_yaml
        doc = load_yaml(path)
        if "name" not in doc:
            raise InputError("the spec has no 'name'", str(path), "name")
        return str(doc["name"]), (doc.get("tracking") or {}).get("uri")
    return name_or_spec, None


def _print_status(ledger, experiment_id: str, name: str, groups=None) -> None:
    """One row per group (its label names the variant and grid point); fits 80 columns."""
    from orchestrator.analysis.status import experiment_status
    groups = groups if groups is not None else experiment_status(ledger, experiment_id)
    metrics = {g.metric for g in groups}
    metric = metrics.pop() if len(metrics) == 1 else "main metric"
    table = Table(title=f"{name}", caption="runs per group; mean over finished seeds", caption_justify="left")
    table.add_column("group", overflow="fold")
    for col in ("done", "running", "queued", "failed", "missing"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column(f"{metric}\n(mean)", justify="right", no_wrap=True)
    for g in groups:
        mean = f"{g.metric_mean:.4g}" if g.metric_mean is not None else "-"
        table.add_row(g.label, f"[green]{g.finished}[/]", str(g.running), str(g.pending),
                      f"[red]{g.failed}[/]" if g.failed else "0", str(g.missing), mean)
    console.print(table)


@app.command()
@handles_input_errors
def status(experiment: Annotated[str, typer.Argument(help="experiment name or spec path")],
           tracking_uri: UriOpt = None,
           as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False):
    """Per group: finished / running / queued / failed / missing runs, and the main metric's mean; per
    `orch tune` sweep: trials finished / running / stopped early / failed, and the best score."""
    from orchestrator import driver
    from orchestrator.analysis.status import experiment_status, sweep_status
    from orchestrator.tracking.ledger import Ledger

    name, spec_uri = _experiment_name(experiment)
    uri = _resolve_uri(tracking_uri, spec_uri)
    ledger = Ledger(uri, create=False)
    experiment_id = ledger.experiment_id(name)
    if experiment_id is None:
        raise InputError(f"no experiment named '{name}' in {uri}")
    records = driver.refresh(ledger, ledger.runs(experiment_id), make_backend)
    parents = driver.update_groups(ledger, experiment_id, records)
    groups = experiment_status(ledger, experiment_id, records, parents)
    sweeps = sweep_status(ledger, experiment_id)
    if as_json:
        print(json.dumps({"experiment": name, "groups": [g.to_dict() for g in groups],
                          "sweeps": [s.to_dict() for s in sweeps]}, indent=1))
        return
    if groups or not sweeps:
        _print_status(ledger, experiment_id, name, groups)
        _print_active(records)
    if sweeps:
        _print_sweeps(name, sweeps)


def _print_sweeps(name: str, sweeps) -> None:
    """One row per `orch tune` sweep of the experiment (fits 80 columns); the best trials below."""
    table = Table(title=f"{name}: sweeps", caption="trials per sweep; stopped = stopped early by the scheduler",
                  caption_justify="left")
    table.add_column("sweep", overflow="fold")
    for col in ("state", "done", "running", "stopped", "failed", "best"):
        table.add_column(col, justify="right", no_wrap=True)
    for s in sweeps:
        table.add_row(s.sweep, s.status.lower(), f"[green]{s.finished}[/]", str(s.running), str(s.stopped_early),
                      f"[red]{s.failed}[/]" if s.failed else "0",
                      f"{s.best_score:.4g}" if s.best_score is not None else "-")
    console.print(table)
    for s in sweeps:
        if s.best_trial:
            console.print(f"  {s.sweep}: best trial {s.best_trial}, {s.metric} {s.best_score:.6g} ({s.mode}, mean "
                          "over its seeds)", highlight=False)


def _print_active(records, limit: int = 10) -> None:
    """Queued and running runs with their job ids (what `orch logs` / `orch cancel --run` take)."""
    active = sorted((r for r in records if r.status in (SCHEDULED, RUNNING)), key=lambda r: r.status != RUNNING)
    for r in active[:limit]:
        console.print(f"  {'running' if r.status == 'RUNNING' else 'queued '}  {r.run_id}  seed {r.tags.get(Tag.SEED, '?'):>3}  "
                      f"{r.tags.get(Tag.BACKEND, '')} job {r.tags.get(Tag.JOB_ID) or '-'}", highlight=False)
    if len(active) > limit:
        console.print(f"  ... and {len(active) - limit} more queued or running")


def _find_run(ledger, run: str):
    """A run by MLflow run id, or by orch key (as printed by --dry-run and status)."""
    from mlflow.exceptions import MlflowException
    if len(run) == 32:
        try:
            return ledger.get(run)
        except MlflowException:
            pass
    experiments = [e.experiment_id for e in ledger.client.search_experiments()]
    for tag in (Tag.KEY, Tag.JOB_ID):
        found = ledger.client.search_runs(experiments, filter_string=f"tags.`{tag}` = '{run}'", max_results=1)
        if found:
            return ledger.get(found[0].info.run_id)
    raise InputError(f"no run with id or key '{run}' in {ledger.uri}")


@app.command()
@handles_input_errors
def logs(run: Annotated[str, typer.Argument(help="MLflow run id or orch run key")],
         lines: Annotated[int, typer.Option("--lines", "-n", help="lines of each log to show")] = 40,
         tracking_uri: UriOpt = None):
    """The tail of a run's stdout and stderr (from its run directory)."""
    from collections import deque

    from orchestrator.job.rundir import RunDir
    from orchestrator.tracking.ledger import Ledger
    ledger = Ledger(_resolve_uri(tracking_uri), create=False)
    record = _find_run(ledger, run)
    run_dir = RunDir(Path(record.tags.get(Tag.RUN_DIR, "")))
    console.print(f"[bold]{record.run_id}[/] {record.status}  {run_dir.path}")
    if record.tags.get(Tag.ERROR):
        console.print(f"[red]error:[/] {record.tags[Tag.ERROR]}")
    for log in (run_dir.stdout, run_dir.stderr, *_scheduler_logs(run_dir)):
        console.rule(log.name)
        if log.exists():
            with open(log, errors="replace") as f:
                sys.stdout.write("".join(deque(f, maxlen=lines)))
        else:
            console.print("(empty)")


def _scheduler_logs(run_dir) -> list[Path]:
    """The scheduler's own log files of the run's job (Slurm: what happened before/after Python ran)."""
    try:
        return [Path(p) for p in json.loads((run_dir.path / "scheduler.json").read_text()).get("logs", [])]
    except (OSError, ValueError):
        return []


@app.command()
@handles_input_errors
def sync(workdir: Annotated[Path, typer.Option("--workdir", help="root of the run directories")] = Path("mlruns/jobs"),
         tracking_uri: UriOpt = None):
    """Ingest run journals that did not reach MLflow (runs on nodes without network, a crashed orchestrator)."""
    from orchestrator.job.rundir import RunDir
    from orchestrator.tracking.ledger import Ledger
    if not workdir.is_dir():
        raise InputError("not a directory", str(workdir))
    ledger_by_uri: dict[str, Ledger] = {}
    counts = {"ingested": 0, "ended": 0}
    for spec_file in sorted(workdir.glob("*/*/run.json")):
        run_dir = RunDir(spec_file.parent)
        uri = tracking_uri or run_dir.load().get("tracking_uri") or _resolve_uri(None)
        ledger = ledger_by_uri.setdefault(uri, Ledger(uri))
        before = run_dir.read_cursor().get("offset", 0)
        if ledger.ingest(run_dir):
            counts["ended"] += 1
        counts["ingested"] += run_dir.read_cursor().get("offset", 0) != before
    console.print(f"synced {counts['ingested']} run directories with new journal lines "
                  f"({counts['ended']} ended) under {workdir}")


@app.command()
@handles_input_errors
def cancel(experiment: Annotated[str, typer.Argument(help="experiment name or spec path")],
           run: Annotated[Optional[str], typer.Option("--run", help="only this run (run id, key, "
                                                      "Slurm job id) or group (group hash)")] = None,
           tracking_uri: UriOpt = None):
    """Stop the queued and running runs of an experiment (or one run); they end KILLED."""
    from orchestrator import driver
    from orchestrator.backends.base import Job
    from orchestrator.job.rundir import RunDir
    from orchestrator.tracking.ledger import Ledger

    name, spec_uri = _experiment_name(experiment)
    ledger = Ledger(_resolve_uri(tracking_uri, spec_uri), create=False)
    experiment_id = ledger.experiment_id(name)
    if experiment_id is None:
        raise InputError(f"no experiment named '{name}' in {ledger.uri}")
    records = [r for r in ledger.runs(experiment_id) if r.status in driver.ACTIVE]
    if run:
        records = [r for r in records if run in (r.run_id, r.key, r.tags.get(Tag.GROUP), r.tags.get(Tag.JOB_ID))]
    by_backend: dict[str, list] = {}
    for record in records:
        job = Job(record.tags.get(Tag.JOB_ID, ""), RunDir(Path(record.tags[Tag.RUN_DIR])))
        by_backend.setdefault(record.tags.get(Tag.BACKEND, "local"), []).append(job)
    for backend_name, jobs in by_backend.items():  # one cancel per backend (slurm: one scancel)
        make_backend(backend_name).cancel(jobs)
        for job in jobs:
            ledger.close_dead(job.run_dir, "cancelled by orch cancel")
    driver.update_groups(ledger, experiment_id)
    console.print(f"cancelled {len(records)} run(s) of {name}")


@app.command()
@handles_input_errors
def compare(experiment: Annotated[str, typer.Argument(help="experiment name or spec path")],
            metric: Annotated[Optional[str], typer.Option("--metric", help="final metric (default: the spec's)")] = None,
            mode: Annotated[Optional[str], typer.Option("--mode", help="min | max: which way is better")] = None,
            baseline: Annotated[Optional[str], typer.Option("--baseline", help="compare every group to this one "
                                                            "(default: all pairs)")] = None,
            by: Annotated[Optional[str], typer.Option("--by", help="group by these params/tags, comma-separated: "
                                                      "variant, grid, params.X, tags.X (default: variant x grid point)")] = None,
            alpha: Annotated[float, typer.Option("--alpha", help="significance level, after Holm correction")] = 0.05,
            curve: Annotated[Optional[str], typer.Option("--curve", help="per-step metric for the learning curves")] = None,
            out: Annotated[Optional[Path], typer.Option("--out", help="also keep the report and plots in this folder")] = None,
            log: Annotated[bool, typer.Option("--log/--no-log", help="log the report to MLflow (a comparison run, "
                                              "and the aggregates on each group's parent run)")] = True,
            as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
            tracking_uri: UriOpt = None):
    """Do the groups differ across seeds? Per group statistics, tests against the baseline, plain verdicts."""
    import tempfile

    from orchestrator.analysis import report as report_mod
    from orchestrator.analysis.compare import log_to_mlflow, run_compare
    from orchestrator.tracking.ledger import Ledger

    name, spec_uri = _experiment_name(experiment)
    ledger = Ledger(_resolve_uri(tracking_uri, spec_uri), create=False)
    result = run_compare(ledger, name, metric=metric, mode=mode, baseline=baseline,
                         by=by.split(",") if by else None, alpha=alpha, curve=curve)
    with tempfile.TemporaryDirectory(prefix="orch-compare-") as tmp:
        files = out or Path(tmp)
        if log or out:  # the plots cost a matplotlib import: only when they go somewhere
            report_mod.write(result, files)
        if log:
            log_to_mlflow(ledger, result, files)
            (files / "compare.json").write_text(json.dumps(result.to_dict(), indent=1))
    if as_json:
        print(json.dumps(result.to_dict(), indent=1))
        return
    report_mod.print_report(result, console)
    if log:
        console.print(f"report logged to MLflow run {result.compare_run_id} ('compare {result.metric}'); "
                      f"browse it with: orch ui")
    if out:
        console.print(f"report and plots in {out}")


@app.command()
@handles_input_errors
def ui(port: Annotated[int, typer.Option("--port", help="port on 127.0.0.1")] = 5000,
       tracking_uri: UriOpt = None):
    """The MLflow UI for the project's store, on 127.0.0.1 (Ctrl-C stops it)."""
    from orchestrator.tracking import ui as ui_mod

    uri = _resolve_uri(tracking_uri)
    ui_mod.check_store(uri)
    if not ui_mod.port_free(port):
        raise InputError(f"port {port} is in use on {ui_mod.HOST}; pick another with --port", "--port")
    import signal

    def stop_on(signum, frame):  # `kill` and a closed terminal stop the server too, not only Ctrl-C
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop_on)
    signal.signal(signal.SIGHUP, stop_on)
    server = ui_mod.Server(uri, port).start()
    try:
        server.wait_ready()
        console.print(f"MLflow UI for {uri}\n  [bold]{server.url}[/]   (Ctrl-C to stop; from a laptop: "
                      f"ssh -L {port}:127.0.0.1:{port} <this host>)", highlight=False)
        server.proc.wait()
        err_console.print(f"[red]the MLflow server stopped by itself (code {server.proc.returncode})[/]")
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping the MLflow UI")
    except RuntimeError as err:
        err_console.print(f"[red]{err}[/]")
        raise typer.Exit(1) from None
    finally:
        server.stop()


@app.command()
def workloads():
    """The registered workloads, their main metric and their params with defaults."""
    from orchestrator.spec import registry
    from orchestrator.spec.spec import flatten
    for name in registry.available():
        workload = registry.get(name)
        table = Table(title=f"{name}  (main metric: {workload.metric}, {workload.mode})", title_justify="left")
        for col in ("param", "default", "description"):
            table.add_column(col)
        defaults = flatten(workload.params_model().model_dump(mode="json"))
        descriptions = _descriptions(workload.params_model)
        for key, value in defaults.items():
            table.add_row(key, json.dumps(value), descriptions.get(key, ""))
        console.print(table)


def _descriptions(model, prefix: str = "") -> dict[str, str]:
    from pydantic import BaseModel
    out = {}
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out.update(_descriptions(field.annotation, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = field.description or ""
    return out


# -- tracking server and moving experiments between stores (orchestrator/tracking/server.py, transfer.py) ----------
server_app = typer.Typer(no_args_is_help=True, help="An MLflow tracking server (PostgreSQL or sqlite) for many "
                                                    "concurrent jobs: start | stop | status.")
app.add_typer(server_app, name="server")
RunDirOpt = Annotated[Path, typer.Option("--run-dir", help="where the server's pid, address and log live")]


@server_app.command("start")
@handles_input_errors
def server_start(
        backend_store_uri: Annotated[Optional[str], typer.Option("--backend-store-uri", help="postgresql://... (see "
                                     "cluster/dev/start-postgres.sh) or sqlite:///... (one user; default: "
                                     "mlruns/mlflow.db)")] = None,
        artifacts: Annotated[Path, typer.Option("--artifacts", help="artifact directory (on a cluster: the "
                                                "shared filesystem)")] = Path("mlruns/artifacts"),
        host: Annotated[str, typer.Option("--host", help="address to bind; anything but loopback exposes an "
                                          "unauthenticated server")] = "127.0.0.1",
        port: Annotated[int, typer.Option("--port")] = 5000,
        workers: Annotated[Optional[int], typer.Option("--workers", help="server processes (default: 2 on "
                                                       "PostgreSQL, 1 on sqlite)")] = None,
        run_dir: RunDirOpt = Path("mlruns/run/server")):
    """Start `mlflow server` in the background; jobs then track through it with `tracking.uri: http://host:port`."""
    from orchestrator.tracking import server
    from orchestrator.tracking.ledger import default_uri
    backend_store_uri = backend_store_uri or default_uri()
    if workers is None:  # two request processes pushed 1.5x the metrics/s of one (benchmarks/tracking_throughput)
        workers = 1 if backend_store_uri.startswith("sqlite") else 2
    info = server.start(backend_store_uri, artifacts, host=host, port=port, run_dir=run_dir, workers=workers,
                        warn=lambda m: err_console.print(f"[bold yellow]{m}[/]", highlight=False))
    console.print(f"MLflow server up at [bold]{info.uri}[/] (pid {info.pid}, store "
                  f"{server.redact(info.backend_store_uri)}, log {info.log})\n"
                  f"use it: --tracking-uri {info.uri}  or  tracking: {{uri: {info.uri}}}")


@server_app.command("stop")
@handles_input_errors
def server_stop(run_dir: RunDirOpt = Path("mlruns/run/server")):
    """Stop the server that `orch server start` started from this run folder (and nothing else)."""
    from orchestrator.tracking import server
    console.print("stopped" if server.stop(run_dir) else f"no server running from {run_dir}")


@server_app.command("status")
@handles_input_errors
def server_status(run_dir: RunDirOpt = Path("mlruns/run/server"),
                  as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False):
    """Whether the server is running and answering, its address, store and log."""
    from orchestrator.tracking import server
    state = server.status(run_dir)
    if as_json:
        print(json.dumps(state, indent=1))
    elif not state["running"]:
        console.print(f"no server running from {run_dir}")
    else:
        health = "[green]healthy[/]" if state["healthy"] else "[red]not answering[/]"
        console.print(f"{state['uri']}  {health}  pid {state['pid']}  up {state['uptime_s']} s\n"
                      f"store {state['backend_store_uri']}\nartifacts {state['artifacts']}\nlog {state['log']}")


@app.command("export")
@handles_input_errors
def export(experiment: Annotated[str, typer.Argument(help="experiment name")],
           out: Annotated[Path, typer.Option("--out", "-o", help="bundle directory to write")],
           tracking_uri: UriOpt = None):
    """Write an experiment (runs, parents, tags, params, metric histories, artifacts) to a bundle directory."""
    from orchestrator.tracking.transfer import export_experiment
    uri = _resolve_uri(tracking_uri)
    count = export_experiment(uri, experiment, out)
    console.print(f"exported {count} runs of {experiment} to {out}")


@app.command("import")
@handles_input_errors
def import_(bundle: Annotated[Path, typer.Argument(help="bundle directory written by orch export")],
            name: Annotated[Optional[str], typer.Option("--name", help="experiment name here (default: "
                                                        "the exported one)")] = None,
            tracking_uri: UriOpt = None):
    """Bring an exported experiment into this store; importing again adds nothing twice."""
    from orchestrator.tracking.transfer import import_bundle
    uri = _resolve_uri(tracking_uri)
    mapping = import_bundle(uri, bundle, name)
    console.print(f"imported {len(mapping)} runs from {bundle} into {uri}")


def main() -> None:  # pragma: no cover - console entry point
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
