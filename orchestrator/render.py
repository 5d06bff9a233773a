"""What the terminal shows: rich tables for plans, statuses, sweeps, tune results and workloads, and the
live progress of a submission. Everything here takes values (records, statuses) and draws them; nothing
reads MLflow or decides anything."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from orchestrator.console import console, err_console
from orchestrator.tracking.records import ACTIVE, RUNNING, Tag, latest_per_key
from orchestrator.vocabulary import RunStatus

if TYPE_CHECKING:
    from orchestrator.analysis.status import GroupStatus
    from orchestrator.api import ExperimentStatus
    from orchestrator.driver import Reconciled
    from orchestrator.follow import RunProgress
    from orchestrator.spec.plan import Run
    from orchestrator.tracking.records import RunRecord

RUN_COLOURS: dict[str, str] = {RunStatus.FINISHED: "green", RunStatus.FAILED: "red", RunStatus.KILLED: "yellow"}


class ProgressBar:
    """A ``driver.ProgressSink`` drawn live: a bar of runs done / running / failed with an eta (follow's, from
    each group's finished runs: orchestrator/eta.py), and below it
    each running run's step, latest metrics and rate (a summary line past ``MAX_ROWS`` runs)."""

    MAX_ROWS = 10

    def __init__(self, total: int):
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta {task.fields[eta]}"),
            console=console,
        )
        self.task = self.progress.add_task("runs", total=total, eta="-")
        self.active: list[RunProgress] = []
        self.live = Live(self._view(), console=console, refresh_per_second=4, transient=False)

    def __enter__(self) -> ProgressBar:
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.active = []  # the finished picture: the bar alone
        self.live.update(self._view())
        self.live.stop()
        end_live()

    def update(
        self,
        done: int,
        running: int,
        failed: int,
        killed: int,
        total: int,
        active: list[RunProgress],
        eta_s: float | None = None,
    ) -> None:
        stopped = f"  [yellow]{killed} killed[/]" if killed else ""
        self.progress.update(
            self.task,
            completed=done,
            total=total,
            # orchestrator/eta.py: "-" until each group still running or queued has finished a run
            eta="-" if eta_s is None or done == total else clock(eta_s),
            description=f"runs  [green]{done - failed - killed} done[/]  [cyan]{running} running[/]  "
            f"[red]{failed} failed[/]{stopped}",
        )
        self.active = active
        self.live.update(self._view())

    def _view(self) -> Group:
        return Group(
            self.progress.get_renderable(), *([running_table(self.active, self.MAX_ROWS)] if self.active else [])
        )


def end_live() -> None:
    """After a ``Live`` stops: in a pipe or a log file rich leaves its last picture without a newline, and the
    next output (a table, an error, the shell's prompt) was glued onto it."""
    if not console.is_terminal:
        console.line()


def clock(seconds: float) -> str:
    """h:mm:ss, hours past 24 included (a day-long sweep)."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def running_table(active: list[RunProgress], max_rows: int) -> Table | Text:
    """One row per running run; past ``max_rows`` runs, one summary line."""
    if len(active) > max_rows:
        steps = sorted(a.step for a in active if a.step is not None)
        rates = [a.rate for a in active if a.rate]
        middle = f"median step {steps[len(steps) // 2]}" if steps else "no step logged yet"
        rate = f", {sum(rates) / len(rates):.3g} steps/s per run" if rates else ""
        stalled = sum(1 for a in active if a.stall)
        return Text(f"{len(active)} runs running: {middle}{rate}" + (f", {stalled} STALLED" if stalled else ""))
    table = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("running", "step", "latest", "steps/s"):
        table.add_column(col, justify="left" if col in ("running", "latest") else "right", no_wrap=col != "latest")
    for a in active:
        latest = ", ".join(f"{k}={v:.4g}" for k, v in list(a.metrics.items())[:3])
        speed = f"{a.rate:.3g}" if a.rate else "-"
        if a.stall:  # the time of its last sign of life, where the rate would be
            speed = f"[red]STALLED since {time.strftime('%H:%M:%S', time.localtime(a.stall.last_sign))}[/]"
        table.add_row(escape(a.label), "-" if a.step is None else str(a.step), latest or "-", speed)
    return table


def plan_table(runs: list[Run], reconciled: Reconciled | None = None) -> Table:
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
        table.add_row(
            run.key, escape(run.group), escape(run.variant), escape(point), str(run.seed), state.get(run.key, "new")
        )
    return table


def drift_lines(drifted: dict[str, tuple[int, dict[str, tuple[Any, Any]]]]) -> list[str]:
    """Finished runs recorded under another default (spec/identity.py): kept, and said so, field by field.
    ``drifted``: group label -> (runs, param path -> (the default they ran with, the default now))."""
    from orchestrator.spec.identity import describe_drift

    return [
        f"note: {n} finished run{'s' if n > 1 else ''} of {label} ran with {describe_drift(changes)}; kept, as a "
        "run's key leaves its defaults out (docs/architecture.md, Run identity): submit under another name to "
        "run them under the new default"
        for label, (n, changes) in drifted.items()
        if n
    ]


def costs_table(name: str, groups: list[GroupStatus]) -> Table:
    """Where an allocation went, per group: every attempt's wall, CPU and GPU hours (GPUs held) and the
    largest memory peak (the runs' system/* totals)."""
    table = Table(
        title=f"{escape(name)}: costs", caption="every attempt counted; GPU-h: GPUs held x wall", caption_justify="left"
    )
    table.add_column("group", overflow="fold")
    for col in ("runs", "wall-h", "CPU-h", "GPU-h", "peak memory", "peak GPU memory"):
        table.add_column(col, justify="right", no_wrap=True)
    for g in groups:
        c = g.costs
        gpu_peak = f"{c['peak_gpu_mem_mb'] / 1024:.2f} GB" if c.get("peak_gpu_mem_mb") else "-"
        table.add_row(
            escape(g.label),
            str(c.get("runs", 0)),
            f"{c.get('wall_h', 0):.3g}",
            f"{c.get('cpu_h', 0):.3g}",
            f"{c.get('gpu_h', 0):.3g}",
            f"{c.get('peak_rss_mb', 0) / 1024:.2f} GB",
            gpu_peak,
        )
    return table


def stall_line(label: str, run_id: str, seed: str, stall: dict[str, float]) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(stall["last_sign_of_life"]))
    return (
        f"STALLED  {run_id}  {label} seed {seed}: no sign of life from the workload since {since} "
        f"({duration(stall['silent_s'])}; stalled after {duration(stall['threshold_s'])})"
    )


def duration(seconds: float) -> str:
    return (
        f"{seconds / 3600:.1f} h"
        if seconds >= 5400
        else f"{seconds / 60:.0f} min"
        if seconds >= 90
        else f"{seconds:.0f} s"
    )


def print_stalled(groups: list[GroupStatus]) -> None:
    """Each stalled run on its own line: which, since when (orch logs RUN shows its output)."""
    for g in groups:
        for s in g.stalled:
            err_console.print(f"[red]{escape(stall_line(g.label, s['run_id'], s['seed'], s))}[/]", highlight=False)


def print_status_drift(groups: list[GroupStatus]) -> None:
    for line in drift_lines({g.label: (g.drifted, {k: (v[0], v[1]) for k, v in g.drift.items()}) for g in groups}):
        err_console.print(f"[yellow]{escape(line)}[/]")


def status_table(name: str, groups: list[GroupStatus]) -> Table:
    """One row per group (its label names the variant and grid point); fits 80 columns."""
    metrics = {g.metric for g in groups}
    metric = metrics.pop() if len(metrics) == 1 else "main metric"
    table = Table(title=escape(name), caption="runs per group; mean over finished seeds", caption_justify="left")
    table.add_column("group", overflow="fold")
    killed = any(g.killed for g in groups)  # a column only when it has something: 80 columns are few
    stalled = any(g.stalled for g in groups)
    extra = [*(["killed"] if killed else []), *(["stalled"] if stalled else [])]
    for col in ("done", "running", "queued", "failed", *extra, "missing"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column(f"{metric}\n(mean)", justify="right", no_wrap=True)
    for g in groups:
        mean = f"{g.metric_mean:.4g}" if g.metric_mean is not None else "-"
        stopped = [f"[yellow]{g.killed}[/]" if g.killed else "0"] if killed else []
        stopped += [f"[red]{len(g.stalled)}[/]" if g.stalled else "0"] if stalled else []
        table.add_row(
            escape(g.label),
            f"[green]{g.finished}[/]",
            str(g.running),
            str(g.pending),
            f"[red]{g.failed}[/]" if g.failed else "0",
            *stopped,
            str(g.missing),
            mean,
        )
    return table


def runs_table(groups: list[GroupStatus], records: list[RunRecord]) -> Table:
    """Every seed run that counts (the latest attempt of each key), group by group, seed by seed."""
    table = Table(title="seed runs", title_justify="left", box=None, pad_edge=False)
    for col in ("run id", "group", "seed", "status", "main metric"):
        table.add_column(col, justify="right" if col in ("seed", "main metric") else "left", no_wrap=True)
    order = {g.group: i for i, g in enumerate(groups)}
    labels = {g.group: (g.label, g.metric) for g in groups}
    counted = [r for r in latest_per_key(records) if r.tags.get(Tag.GROUP) in order]
    for r in sorted(counted, key=lambda r: (order[r.tags[Tag.GROUP]], int(r.tags.get(Tag.SEED, 0)))):
        label, metric = labels[r.tags[Tag.GROUP]]
        value = r.metrics.get(metric)
        colour = RUN_COLOURS.get(r.status, "cyan")
        table.add_row(
            r.run_id,
            escape(label),
            r.tags.get(Tag.SEED, "?"),
            f"[{colour}]{r.status.lower()}[/]",
            "-" if value is None else f"{metric} {value:.4g}",
        )
    return table


def print_active(records: list[RunRecord], limit: int = 10) -> None:
    """Queued and running runs with their job ids (what `orch logs` / `orch cancel --run` take)."""
    active = sorted((r for r in records if r.status in ACTIVE), key=lambda r: r.status != RUNNING)
    for r in active[:limit]:
        console.print(
            f"  {'running' if r.status == RUNNING else 'queued '}  {r.run_id}  seed "
            f"{r.tags.get(Tag.SEED, '?'):>3}  {r.tags.get(Tag.BACKEND, '')} job "
            f"{r.tags.get(Tag.JOB_ID) or '-'}",
            highlight=False,
        )
    if len(active) > limit:
        console.print(f"  ... and {len(active) - limit} more queued or running")


def watch_status(read: Callable[[], ExperimentStatus], every_s: float = 2.0) -> None:
    """Redraw the status table and the running runs until no run is queued or running."""
    started_at: dict[str, Any] = {}
    try:
        _watch(read, every_s, started_at)
    finally:  # Ctrl-C included
        end_live()


def _watch(read: Callable[[], ExperimentStatus], every_s: float, started_at: dict[str, Any]) -> None:
    from pathlib import Path

    from orchestrator.follow import run_progress
    from orchestrator.job.rundir import RunDir

    with Live(console=console, refresh_per_second=2) as live:
        while True:
            state = read()
            running = [r for r in state.records if r.status == RUNNING]
            active = [
                run_progress(
                    r.tags.get("mlflow.runName", r.run_id), RunDir(Path(r.tags.get(Tag.RUN_DIR, ""))), started_at
                )
                for r in running
            ]
            queued = sum(r.status in ACTIVE for r in state.records) - len(running)
            parts: list[Any] = [status_table(state.name, state.groups)]
            if active:
                parts.append(running_table(active, ProgressBar.MAX_ROWS))
            parts.append(
                Text(
                    f"{len(running)} running, {queued} queued"
                    + ("" if running or queued else ": nothing left to watch")
                )
            )
            live.update(Group(*parts))
            if not running and not queued:
                return
            time.sleep(every_s)


def workload_table(name: str) -> Table:
    """A workload's main metric and its params with defaults and descriptions."""
    from orchestrator.spec import registry
    from orchestrator.spec.identity import excluded_paths
    from orchestrator.spec.spec import flatten

    workload = registry.get(name)
    table = Table(title=f"{name}  (main metric: {workload.metric}, {workload.mode})", title_justify="left")
    for col in ("param", "default", "description"):
        table.add_column(col)
    defaults = flatten(workload.params_model().model_dump(mode="json"))
    descriptions = _descriptions(workload.params_model)
    settings = excluded_paths(workload.params_model)
    for key, value in defaults.items():
        note = " (execution setting: not part of the run key)" if key in settings else ""
        table.add_row(
            escape(key), escape(json.dumps(value)), escape(descriptions.get(key, "") + note)
        )  # "[u; x]" is text
    return table


def _descriptions(model: Any, prefix: str = "") -> dict[str, str]:
    from pydantic import BaseModel

    out = {}
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out.update(_descriptions(field.annotation, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = field.description or ""
    return out
