"""The tracking stack the server tests share: a real PostgreSQL (cluster/dev/start-postgres.sh, its own data
directory and port) and one real ``mlflow server --workers 1`` on it, on loopback. Started once per test
session (PostgreSQL ~5 s, MLflow's first migration of an empty database ~20 s) and stopped at exit.
Also the CLI's own start/stop/status, on a sqlite store."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from orchestrator.tracking import server

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    def __init__(self):
        # Not pytest's tmp_path: its parents are 0700 and the 'postgres' user must reach its data directory.
        self.root = Path(tempfile.mkdtemp(prefix="orch-stack-"))
        self.root.chmod(0o755)
        self.pg_env = {**os.environ, "ORCH_PG_DIR": str(self.root / "pg"), "ORCH_PG_PORT": str(free_port())}
        out = subprocess.run([str(REPO / "cluster/dev/start-postgres.sh")], env=self.pg_env, capture_output=True,
                             text=True, timeout=900)
        if out.returncode != 0:
            raise RuntimeError(f"start-postgres.sh failed:\n{out.stdout}\n{out.stderr}")
        self.db_uri = out.stdout.strip().splitlines()[-1]
        self.server_dir = self.root / "server"
        self.port = free_port()
        self.start_server()

    def start_server(self) -> None:
        self.info = server.start(self.db_uri, self.root / "artifacts", port=self.port, run_dir=self.server_dir)
        self.uri = self.info.uri

    def kill_server(self) -> None:
        assert server.stop(self.server_dir, kill=True)

    def close(self) -> None:
        server.stop(self.server_dir)
        subprocess.run([str(REPO / "cluster/dev/stop-postgres.sh")], env=self.pg_env, capture_output=True, timeout=120)
        shutil.rmtree(self.root, ignore_errors=True)


_stack: Stack | None = None


def shared_stack() -> Stack:
    global _stack
    if _stack is None:
        _stack = Stack()
        atexit.register(_stack.close)
    elif not server.healthy(_stack.uri):  # a test killed it and failed before restarting it
        server.stop(_stack.server_dir)
        _stack.start_server()
    return _stack


def test_orch_server_start_status_stop_on_sqlite(tmp_path):
    from typer.testing import CliRunner

    from orchestrator.cli import app
    run_dir, port = tmp_path / "run", free_port()
    cli = CliRunner()
    result = cli.invoke(app, ["server", "start", "--backend-store-uri", f"sqlite:///{tmp_path / 'm.db'}",
                              "--artifacts", str(tmp_path / "art"), "--port", str(port), "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    try:
        state = json.loads(cli.invoke(app, ["server", "status", "--json", "--run-dir", str(run_dir)]).output)
        assert state["running"] and state["healthy"] and state["uri"] == f"http://127.0.0.1:{port}"
        pid = state["pid"]
        again = cli.invoke(app, ["server", "start", "--port", str(free_port()), "--run-dir", str(run_dir)])
        assert again.exit_code == 2 and "already running" in again.output
    finally:
        stopped = cli.invoke(app, ["server", "stop", "--run-dir", str(run_dir)])
    assert stopped.exit_code == 0 and "stopped" in stopped.output
    assert not Path(f"/proc/{pid}").exists() or b"mlflow" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not server.healthy(f"http://127.0.0.1:{port}")
    assert json.loads(cli.invoke(app, ["server", "status", "--json", "--run-dir", str(run_dir)]).output) == {"running": False}
    bad = cli.invoke(app, ["server", "start", "--backend-store-uri", "mongodb://x", "--run-dir", str(run_dir)])
    assert bad.exit_code == 2 and "--backend-store-uri" in bad.output
