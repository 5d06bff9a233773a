"""`orch ui`: the MLflow UI over the project's store, bound to loopback (reach it from a laptop with
``ssh -L PORT:127.0.0.1:PORT login-node``), for its owner only (a token in the printed link:
``ui_gate.py``), stopped cleanly with its worker processes on Ctrl-C.

One worker: the UI is for one person, and one worker starts in ~6 s and 1.6 GB where four take ~16 s and
2.5 GB (measured on a 2-core machine)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.spec.tracking_uri import sqlite_path
from orchestrator.tracking import server, ui_gate

HOST = "127.0.0.1"


def port_free(port: int, host: str = HOST) -> bool:
    with socket.socket() as s:
        # as the server will: connections of a UI just stopped (TIME_WAIT) do not make the port busy
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen()
        except OSError:
            return False
    return True


def free_port(host: str = HOST) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


# MLflow 3's UI opens in its GenAI mode (traces, sessions) unless the page's query says otherwise, whatever
# the experiment's kind tag: every link orch prints asks for the model-training pages (runs, metrics).
TRAINING_VIEW = "workflowType=machine_learning"


def page(base: str, experiment_id: str | None = None, run_id: str | None = None, token: str | None = None) -> str:
    """A UI link that opens on training runs: the experiments, one experiment's runs, or one run; with
    ``token``, the link that lets a browser in (``ui_gate``)."""
    route = "/experiments" + (f"/{experiment_id}" if experiment_id else "") + (f"/runs/{run_id}" if run_id else "")
    entry = f"?{ui_gate.TOKEN_QUERY}={token}" if token else ""
    return f"{base}/{entry}#{route}?{TRAINING_VIEW}"


def check_store(uri: str) -> None:
    """Refuse what the UI cannot serve, before starting anything."""
    if uri.startswith(("http://", "https://")):
        raise InputError(f"{uri} is already an MLflow server: open it in a browser", "--tracking-uri")
    database = sqlite_path(uri)
    if database is not None and not database.exists():
        raise InputError(
            f"no MLflow store at {database} yet: submit an experiment first, or pass --tracking-uri", "--tracking-uri"
        )


class Server:
    """``mlflow server`` as a child in its own process group (tracking/server.py's spawn, health wait and
    group stop), so that stopping it stops its workers too."""

    def __init__(self, uri: str, port: int, host: str = HOST):
        self.uri, self.port, self.host = uri, port, host
        self.url = f"http://{host}:{port}"
        self.token = secrets.token_urlsafe(32)
        self.proc: subprocess.Popen | None = None
        self.log = Path(tempfile.mkstemp(prefix="orch-ui-", suffix=".log")[1])

    def start(self) -> Server:
        env = {
            **os.environ,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            # MLflow 3's job runner and its huey consumers (~7 processes, ~0.8 GB) serve GenAI jobs only
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            ui_gate.TOKEN_ENV: self.token,  # the environment: readable by its owner only, unlike argv
            ui_gate.PORT_ENV: str(self.port),
        }
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            self.uri,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--app-name",
            "orch-ui",
        ]
        self.proc = server.spawn(cmd, self.log, env)
        return self

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        assert self.proc is not None, "start() first"
        try:
            server.wait_healthy(self.proc, self.url, timeout_s, self.log)
        except RuntimeError:
            self.stop()
            raise

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM to the whole group (server and workers), SIGKILL to what is left after ``timeout_s``."""
        if self.proc is None:
            return
        server.stop_group(self.proc.pid, timeout_s)
        self.proc.poll()
        self.log.unlink(missing_ok=True)

    def __enter__(self) -> Server:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
