"""What every `orch` command shares: the typer app, the option types, and the handler that turns bad input
into `error: <file>: <field>: <what was expected>` and exit code 2."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from orchestrator.console import err_console
from orchestrator.errors import InputError, StorageError, storage_error

# Plain (click) help: typer's rich help imports rich's markdown renderer and half of rich, ~0.2 s that every
# `orch --help` and usage error paid (measured: benchmarks/command_latency.py).
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="orch: declare experiments in YAML, run every seed locally, on Slurm or on Ray, "
    "record everything in MLflow, and compare across seeds.",
)

SpecArg = Annotated[Path, typer.Argument(help="the experiment spec (YAML)")]
ExperimentArg = Annotated[str, typer.Argument(help="experiment name or spec path")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="override KEY=VALUE (YAML-typed), repeatable")]
UriOpt = Annotated[
    str | None,
    typer.Option(
        "--tracking-uri",
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, then the spec's, then sqlite:///mlruns/mlflow.db)",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address",
        help="ray: a running cluster ('auto' or host:port; default RAY_ADDRESS, cluster/ray.yaml, else a local Ray)",
    ),
]


def stop_on_termination() -> None:
    """``kill`` (SIGTERM) and a closed terminal or SSH session (SIGHUP) stop this command as Ctrl-C does: its
    handlers then stop what it started (local runs end KILLED, recorded) instead of leaving them running
    with nobody following them."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


def handles_input_errors(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except InputError as err:
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except StorageError as err:  # not the user's input, but theirs to fix (free space): no traceback
            err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except Exception as err:
            full = storage_error(err)  # a full disk met anywhere (MLflow's store, a run directory)
            if full is None:
                raise
            err_console.print(f"[bold red]error:[/] {escape(str(full))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _print_version(asked: bool) -> None:
    if asked:
        from orchestrator import __version__

        print(f"orch {__version__}")
        raise typer.Exit()


@app.callback()
@handles_input_errors
def main(
    max_runs: Annotated[
        int | None,
        typer.Option(
            "--max-runs",
            min=1,
            help="refuse a submission planning more runs than this (default 10,000; env ORCH_MAX_RUNS)",
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="print orch's version and exit")
    ] = False,
) -> None:
    """orch: declare experiments in YAML, run every seed locally, on Slurm or on Ray, record everything in
    MLflow, and compare across seeds."""
    from orchestrator import privacy
    from orchestrator.spec import spec

    privacy.apply()  # before anything is written: the store and every job's files private to their owner
    # read where the plan is counted (spec.check_plan_size); set on every invocation, so an in-process
    # caller (a notebook, the tests' CliRunner) does not keep one command's limit for the next
    spec.max_runs_flag = max_runs
