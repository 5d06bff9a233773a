"""`orch tune`'s table of top trials where people read it: a wide terminal gets a column per param, 80
columns (a pipe, a log file) one wrapped "config" column, never cells squeezed to "0.…"."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from orchestrator.render_tune import trials_table
from orchestrator.tune.sweep import SweepResult, TrialRow
from orchestrator.vocabulary import TrialStatus

PARAMS = ["sr", "leak", "input_scaling", "input_density", "rc_connectivity", "bias_scaling", "eta", "beta", "epsilon"]


def result() -> SweepResult:
    rows = [
        TrialRow(f"tr{i:03d}", TrialStatus.FINISHED, 0.6 + i / 100, {p: 0.123456 * (i + 1) for p in PARAMS}, 25)
        for i in range(3)
    ]
    return SweepResult("evo_topo_random50_tune-20261207-092310-1a90", Path("."), "p", "1", "test_accuracy", "max", rows)


def shown(width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(trials_table(result(), 10, width))
    return out.getvalue()


def test_at_80_columns_the_params_wrap_in_one_column_with_their_values_whole():
    text = shown(80)
    assert "…" not in text and "config" in text
    flat = "".join(line.strip(" │┃") for line in text.splitlines())
    assert "input_scaling=0.1235" in flat.replace(" ", "") and "tr002" in text
    assert all(len(line) <= 80 for line in text.splitlines())


def test_a_wide_terminal_gets_a_column_per_param():
    text = shown(240)
    assert "config" not in text and all(p in text for p in PARAMS) and "…" not in text
