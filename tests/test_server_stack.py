"""`orch server start / status / stop` through the CLI, on a sqlite store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import free_port

from orchestrator.tracking import server

pytestmark = pytest.mark.server


def test_orch_server_start_status_stop_on_sqlite(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    monkeypatch.setenv("ORCH_CREDENTIALS_DIR", str(tmp_path / "creds"))  # authenticated by default: not ~/.config

    from orchestrator.cli import app

    run_dir, port = tmp_path / "run", free_port()
    cli = CliRunner()
    result = cli.invoke(
        app,
        [
            "server",
            "start",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'm.db'}",
            "--artifacts",
            str(tmp_path / "art"),
            "--port",
            str(port),
            "--run-dir",
            str(run_dir),
        ],
    )
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
    assert json.loads(cli.invoke(app, ["server", "status", "--json", "--run-dir", str(run_dir)]).output) == {
        "running": False
    }
    bad = cli.invoke(app, ["server", "start", "--backend-store-uri", "mongodb://x", "--run-dir", str(run_dir)])
    assert bad.exit_code == 2 and "--backend-store-uri" in bad.output
