"""What ``orch tune`` draws: the live trial table while a sweep runs, the ranked trials once it ended, and the
sweeps of an experiment in ``orch status``."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from orchestrator.console import console
from orchestrator.tracking.records import RUNNING
from orchestrator.vocabulary import TrialStatus

if TYPE_CHECKING:
    from orchestrator.analysis.status import SweepStatus
    from orchestrator.tune.recorder import TrialState
    from orchestrator.tune.sweep import SweepResult

TRIAL_COLOURS = {TrialStatus.FINISHED: "green", TrialStatus.STOPPED: "yellow", TrialStatus.FAILED: "red"}


class TrialBoard:
    """``orch tune``'s live trial table (a ``recorder.TrialSink``): every trial's status, reports, last step
    and latest metric, redrawn at most 4 times a second; past ``MAX_ROWS`` trials, the running ones and a
    count of the rest."""

    MAX_ROWS = 20

    def __init__(self) -> None:
        self.metric = ""
        self.trials: list[TrialState] = []
        self.live = Live(Text("waiting for the first trial"), console=console, refresh_per_second=4)
        self._drawn = 0.0

    def __enter__(self) -> TrialBoard:
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.update(self._view())
        self.live.stop()

    def __call__(self, trials: list[TrialState], metric: str) -> None:
        self.trials, self.metric = trials, metric
        if time.monotonic() - self._drawn > 0.25:
            self._drawn = time.monotonic()
            self.live.update(self._view())

    def _view(self) -> Table:
        shown = self.trials if len(self.trials) <= self.MAX_ROWS else [t for t in self.trials if t.status == RUNNING]
        counts = {status: sum(t.status == status for t in self.trials) for status in TrialStatus}
        table = Table(
            title=", ".join(f"{n} {s.lower()}" for s, n in counts.items() if n) or "no trial yet",
            title_justify="left",
            box=None,
            pad_edge=False,
        )
        for col in ("trial", "status", "reports", "step", self.metric or "metric", "config"):
            table.add_column(
                col, justify="right" if col in ("reports", "step", self.metric) else "left", no_wrap=col != "config"
            )
        for t in shown:
            colour = TRIAL_COLOURS.get(t.status, "cyan" if t.status == RUNNING else "dim")
            value = t.latest.get(self.metric)
            config = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in t.config.items())
            table.add_row(
                t.trial_id,
                f"[{colour}]{t.status.lower()}[/]",
                str(t.reports),
                "-" if t.step is None else str(t.step),
                "-" if value is None else f"{value:.5g}",
                config,
            )
        return table


def print_sweeps(name: str, sweeps: list[SweepStatus]) -> None:
    """One row per `orch tune` sweep of the experiment (fits 80 columns); the best trials below."""
    table = Table(
        title=f"{name}: sweeps",
        caption="trials per sweep; stopped = stopped early by the scheduler",
        caption_justify="left",
    )
    table.add_column("sweep", overflow="fold")
    for col in ("state", "done", "running", "stopped", "failed", "best"):
        table.add_column(col, justify="right", no_wrap=True)
    for s in sweeps:
        table.add_row(
            s.sweep,
            s.status.lower(),
            f"[green]{s.finished}[/]",
            str(s.running),
            str(s.stopped_early),
            f"[red]{s.failed}[/]" if s.failed else "0",
            f"{s.best_score:.4g}" if s.best_score is not None else "-",
        )
    console.print(table)
    for s in sweeps:
        if s.best_trial:
            console.print(
                f"  {s.sweep}: best trial {s.best_trial}, {s.metric} {s.best_score:.6g} ({s.mode}, mean "
                "over its seeds)",
                highlight=False,
            )
    for s in sweeps:
        if s.importance:
            console.print(f"  {s.sweep}: which params mattered for {s.metric}", highlight=False)
            console.print(importance_table(s.importance))


def importance_table(importance: dict[str, dict[str, float]]) -> Table:
    """Hyperparameter importance per evaluator (Optuna's fANOVA, PED-ANOVA; tune/analytics.py), most
    important first; each evaluator's column sums to 1."""
    evaluators = list(importance)
    params = sorted(
        {p for v in importance.values() for p in v}, key=lambda p: -max(v.get(p, 0.0) for v in importance.values())
    )
    table = Table(caption="hyperparameter importance over the finished trials (Optuna)", caption_justify="left")
    table.add_column("param")
    for name in evaluators:
        table.add_column({"fanova": "fANOVA", "ped_anova": "PED-ANOVA"}.get(name, name), justify="right")
    for param in params:
        table.add_row(
            param, *(f"{importance[name][param]:.2f}" if param in importance[name] else "-" for name in evaluators)
        )
    return table


def trials_table(result: SweepResult, top: int, width: int | None = None) -> Table:
    """The top trials, a column per searched param; when those columns cannot fit the terminal's width
    (80 columns in a pipe), the params as one wrapped "config" column instead of cells squeezed to "0.…"."""
    names = list(dict.fromkeys(k for row in result.rows for k in row.config))
    rows = result.rows[:top]
    cells = {n: [_cell(row.config.get(n, "")) for row in rows] for n in names}
    fixed = ("rank", "trial", "status", result.metric, "reports")
    needed = sum(max([len(n), *map(len, cells[n])]) + 3 for n in names) + sum(len(c) + 3 for c in fixed) + 12
    compact = needed > (width or console.width)
    table = Table(title=f"{escape(result.sweep)}: top trials by {escape(result.metric)} ({result.mode})")
    for col in (*fixed, *(["config"] if compact else names)):
        left = col in ("trial", "status", "config")
        table.add_column(escape(col), justify="left" if left else "right", overflow="fold", no_wrap=col == "trial")
    for rank, row in enumerate(rows, 1):
        score = f"{row.score:.6g}" if row.score is not None else "-"
        values = [cells[n][rank - 1] for n in names]
        params = [", ".join(f"{n}={v}" for n, v in zip(names, values, strict=True))] if compact else values
        table.add_row(
            str(rank),
            row.trial_id,
            f"[{TRIAL_COLOURS[row.status]}]{row.status.lower()}[/]",
            score,
            str(row.reports),
            *map(escape, params),
        )
    return table


def _cell(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
