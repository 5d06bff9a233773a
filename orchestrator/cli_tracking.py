"""The `orch` commands around the tracking store: `orch ui`, `orch server start|stop|status`, `orch export`,
`orch import` (registered on the main app by ``orchestrator.cli``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from orchestrator.console import console, err_console
from orchestrator.errors import InputError
from orchestrator.options import UriOpt, app, handles_input_errors, stop_on_termination


@app.command()
@handles_input_errors
def ui(port: Annotated[int, typer.Option("--port", help="port on 127.0.0.1")] = 5000, tracking_uri: UriOpt = None):
    """The MLflow UI for the project's store, on 127.0.0.1 (Ctrl-C stops it)."""
    from orchestrator.tracking import ui as ui_mod
    from orchestrator.tracking.uri import resolve_uri

    uri = resolve_uri(tracking_uri)
    ui_mod.check_store(uri)
    if not ui_mod.port_free(port):
        raise InputError(f"port {port} is in use on {ui_mod.HOST}; pick another with --port", "--port")
    stop_on_termination()  # `kill` and a closed terminal stop the server too, not only Ctrl-C
    server = ui_mod.Server(uri, port).start()
    try:
        server.wait_ready()
        console.print(
            f"MLflow UI for {escape(uri)}, for you only (the link carries its access token)\n"
            f"  [bold]{ui_mod.page(server.url, token=server.token)}[/]\n"
            f"  Ctrl-C to stop; from a laptop: ssh -L {port}:127.0.0.1:{port} <this host>, then open the link",
            highlight=False,
            soft_wrap=True,  # a link broken over two lines cannot be clicked or pasted
        )
        assert server.proc is not None
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


# -- tracking server and moving experiments between stores (orchestrator/tracking/server.py, transfer.py) ----------
server_app = typer.Typer(
    no_args_is_help=True,
    help="An MLflow tracking server (PostgreSQL or sqlite) for many concurrent jobs: start | stop | status.",
)
app.add_typer(server_app, name="server")
RunDirOpt = Annotated[Path, typer.Option("--run-dir", help="where the server's pid, address and log live")]


@server_app.command("start")
@handles_input_errors
def server_start(
    backend_store_uri: Annotated[
        str | None,
        typer.Option(
            "--backend-store-uri",
            help="postgresql://... (see "
            "cluster/dev/start-postgres.sh) or sqlite:///... (one user; default: "
            "mlruns/mlflow.db)",
        ),
    ] = None,
    artifacts: Annotated[
        Path, typer.Option("--artifacts", help="artifact directory (on a cluster: the shared filesystem)")
    ] = Path("mlruns/artifacts"),
    host: Annotated[
        str, typer.Option("--host", help="address to bind; anything but loopback exposes the server to the network")
    ] = "127.0.0.1",
    auth: Annotated[
        bool,
        typer.Option(
            "--auth/--no-auth",
            help="MLflow's basic-auth app, one user whose "
            "credentials only you can read (--no-auth: anyone on this machine can "
            "read and change every run)",
        ),
    ] = True,
    port: Annotated[int, typer.Option("--port")] = 5000,
    workers: Annotated[
        int | None, typer.Option("--workers", help="server processes (default: 2 on PostgreSQL, 1 on sqlite)")
    ] = None,
    run_dir: RunDirOpt = Path("mlruns/run/server"),
):
    """Start `mlflow server` in the background; jobs then track through it with `tracking.uri: http://host:port`."""
    from orchestrator.spec.tracking_uri import default_uri
    from orchestrator.tracking import server

    backend_store_uri = backend_store_uri or default_uri()
    if workers is None:  # two request processes pushed 1.5x the metrics/s of one (benchmarks/tracking_throughput)
        workers = 1 if backend_store_uri.startswith("sqlite") else 2
    info = server.start(
        backend_store_uri,
        artifacts,
        host=host,
        port=port,
        run_dir=run_dir,
        workers=workers,
        warn=lambda m: err_console.print(f"[bold yellow]{m}[/]", highlight=False),
        auth=auth,
    )
    console.print(
        f"MLflow server up at [bold]{info.uri}[/] (pid {info.pid}, store "
        f"{server.redact(info.backend_store_uri)}, log {info.log})\n"
        f"use it: --tracking-uri {info.uri}  or  tracking: {{uri: {info.uri}}}"
    )
    if auth:  # where the credentials are, never what they are
        from orchestrator.tracking.auth import credentials_dir

        console.print(
            f"authenticated: orch finds your credentials in {credentials_dir()} (0600); other tools: "
            "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD from "
            f"{info.log.rsplit('/', 1)[0]}/auth/credentials.json",
            highlight=False,
        )
    else:
        err_console.print(
            "[bold yellow]warning: --no-auth: every user of this machine can read, change and "
            "delete every run on this server[/]",
            highlight=False,
        )


@server_app.command("stop")
@handles_input_errors
def server_stop(run_dir: RunDirOpt = Path("mlruns/run/server")):
    """Stop the server that `orch server start` started from this run folder (and nothing else)."""
    from orchestrator.tracking import server

    console.print("stopped" if server.stop(run_dir) else f"no server running from {run_dir}")


@server_app.command("status")
@handles_input_errors
def server_status(
    run_dir: RunDirOpt = Path("mlruns/run/server"),
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
):
    """Whether the server is running and answering, its address, store and log."""
    from orchestrator.tracking import server

    state = server.status(run_dir)
    if as_json:
        print(json.dumps(state, indent=1))
    elif not state["running"]:
        console.print(f"no server running from {run_dir}")
    else:
        health = "[green]healthy[/]" if state["healthy"] else "[red]not answering[/]"
        console.print(
            f"{state['uri']}  {health}  pid {state['pid']}  up {state['uptime_s']} s\n"
            f"store {state['backend_store_uri']}\nartifacts {state['artifacts']}\nlog {state['log']}"
        )


@app.command("export")
@handles_input_errors
def export(
    experiment: Annotated[str, typer.Argument(help="experiment name")],
    out: Annotated[Path, typer.Option("--out", "-o", help="bundle directory to write")],
    tracking_uri: UriOpt = None,
):
    """Write an experiment (runs, parents, tags, params, metric histories, artifacts) to a bundle directory."""
    from orchestrator.tracking.transfer import export_experiment
    from orchestrator.tracking.uri import resolve_uri

    uri = resolve_uri(tracking_uri)
    count = export_experiment(uri, experiment, out)
    console.print(f"exported {count} runs of {experiment} to {out}")


@app.command("import")
@handles_input_errors
def import_(
    bundle: Annotated[Path, typer.Argument(help="bundle directory written by orch export")],
    name: Annotated[str | None, typer.Option("--name", help="experiment name here (default: the exported one)")] = None,
    tracking_uri: UriOpt = None,
):
    """Bring an exported experiment into this store; importing again adds nothing twice."""
    from orchestrator.tracking.transfer import import_bundle
    from orchestrator.tracking.uri import resolve_uri

    uri = resolve_uri(tracking_uri)
    done = import_bundle(uri, bundle, name)
    again = len(done.mapping) - done.new
    console.print(
        f"imported {done.new} new runs from {bundle} into {uri}"
        + (f" ({again} imported before: brought up to date)" if again else "")
    )


@app.command("ls")
@handles_input_errors
def ls(tracking_uri: UriOpt = None):
    """The store's experiments: runs (attempts), groups, finished runs and last activity."""
    import time

    from rich.table import Table

    from orchestrator import api
    from orchestrator.tracking.uri import resolve_uri

    table = Table(title=f"experiments in {resolve_uri(tracking_uri)}", title_justify="left")
    for col in ("experiment", "runs", "attempts", "groups", "finished", "last activity"):
        table.add_column(col, justify="left" if col in ("experiment", "last activity") else "right")
    for e in api.list_experiments(tracking_uri):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_activity)) if e.last_activity else "-"
        table.add_row(escape(e.name), str(e.runs), str(e.attempts), str(e.groups), str(e.finished), when)
    console.print(table)


@app.command("delete")
@handles_input_errors
def delete(
    experiment: Annotated[str, typer.Argument(help="experiment name")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    tracking_uri: UriOpt = None,
):
    """Delete an experiment: its MLflow runs and its run directories (journals, checkpoints, logs)."""
    from orchestrator import api

    ledger, _, name = api.open_experiment(experiment, tracking_uri)
    if not yes and not typer.confirm(f"delete every run of '{name}' in {ledger.uri} and their run directories?"):
        raise typer.Exit(1)
    runs, folders = api.delete_experiment(name, tracking_uri)
    console.print(f"deleted {name}: {runs} MLflow runs, {folders} run directories")
