"""`orch server start` on a shared login node: authenticated by default (another uid is refused, the owner's
runs still log), credentials readable by the owner only and never printed; and a `kill -9` of the recorded
pid does not leave an orphan that status, start and stop mistake for nothing.

One real `mlflow server` (basic-auth app, sqlite store) for the module; the second uid is `nobody`."""

from __future__ import annotations

import json
import os
import pwd
import signal
import stat
import subprocess
import time
import urllib.error
import urllib.request
from base64 import b64encode
from pathlib import Path

import pytest
from support import free_port, wait_for
from typer.testing import CliRunner

from orchestrator.tracking import server

pytestmark = pytest.mark.server
PYTHON = "/usr/bin/python3"  # the other uid runs the system Python: this checkout's venv may not be theirs to read


def request(uri: str, path: str, auth: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(f"{uri}{path}")
    if auth:
        req.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def as_other_user(code: str) -> subprocess.CompletedProcess:
    if os.geteuid() != 0:
        pytest.skip("running as another uid needs root (CI runs these as root)")
    pwd.getpwnam("nobody")
    return subprocess.run(
        ["runuser", "-u", "nobody", "--", PYTHON, "-c", code], capture_output=True, text=True, timeout=60, cwd="/"
    )


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    root = tmp_path_factory.mktemp("secured")
    root.chmod(0o755)  # `nobody` may walk to the files it must not read
    creds = root / "creds"
    saved = {k: os.environ.pop(k, None) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ["ORCH_CREDENTIALS_DIR"] = str(creds)
    port = free_port()
    run_dir = root / "server"
    from orchestrator.cli import app

    result = CliRunner().invoke(
        app,
        [
            "server",
            "start",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts",
            str(root / "artifacts"),
            "--port",
            str(port),
            "--run-dir",
            str(run_dir),
        ],
    )
    try:
        assert result.exit_code == 0, result.output
        info = server.read_info(run_dir)
        assert info is not None and info.auth
        yield {"root": root, "run_dir": run_dir, "info": info, "output": result.output, "creds": creds}
    finally:
        server.stop(run_dir)
        os.environ.pop("ORCH_CREDENTIALS_DIR", None)
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


def credentials(secured) -> tuple[str, str]:
    data = json.loads((secured["run_dir"] / "auth" / "credentials.json").read_text())
    return data["username"], data["password"]


def test_the_server_refuses_requests_without_credentials(secured):
    uri = secured["info"].uri
    assert request(uri, "/health") == 200  # health stays open: orch probes it before anything
    assert request(uri, "/api/2.0/mlflow/experiments/search?max_results=5") == 401
    assert request(uri, "/api/2.0/mlflow/experiments/search?max_results=5", ("orch-x", "guess")) == 401
    assert request(uri, "/api/2.0/mlflow/experiments/search?max_results=5", credentials(secured)) == 200


def test_credentials_are_the_owners_alone_and_never_printed(secured):
    _user, password = credentials(secured)
    assert password not in secured["output"] and password not in Path(secured["info"].log).read_text()
    for path in (
        secured["run_dir"] / "auth" / "credentials.json",
        secured["run_dir"] / "auth" / "basic_auth.ini",
        next(secured["creds"].glob("*.json")),
    ):
        info = path.stat()
        assert info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) == 0o600, (path, oct(info.st_mode))
    for folder in (secured["run_dir"] / "auth", secured["creds"]):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert password not in (secured["run_dir"] / "auth" / "basic_auth.ini").read_text()


def test_another_uid_is_refused(secured):
    uri = secured["info"].uri
    code = f"""
import json, urllib.request, urllib.error
out = {{}}
for name, path, data in (("list", "/api/2.0/mlflow/experiments/search?max_results=5", None),
                         ("create", "/api/2.0/mlflow/experiments/create", b'{{"name": "intruder"}}')):
    req = urllib.request.Request("{uri}" + path, data=data, headers={{"Content-Type": "application/json"}})
    try:
        out[name] = urllib.request.urlopen(req, timeout=10).status
    except urllib.error.HTTPError as err:
        out[name] = err.code
for name, path in (("credentials", "{secured["run_dir"] / "auth" / "credentials.json"}"),
                   ("environ", "/proc/{secured["info"].pid}/environ")):
    try:
        open(path, "rb").read()
        out[name] = "read"
    except OSError as err:
        out[name] = type(err).__name__
print(json.dumps(out))
"""
    done = as_other_user(code)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["list"] == 401 and out["create"] == 401, out
    assert out["credentials"] == "PermissionError" and out["environ"] == "PermissionError", out


def test_the_owners_runs_still_log(secured, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)  # orch finds them itself
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    uri = secured["info"].uri
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: secure\nworkload: smoke\nparams: {{steps: 4}}\nseeds: 2\nworkdir: {tmp_path / 'jobs'}\n")
    from orchestrator.cli import app

    result = CliRunner().invoke(app, ["submit", str(spec), "--tracking-uri", uri])
    assert result.exit_code == 0, result.output
    assert credentials(secured)[1] not in result.output
    from orchestrator.tracking.ledger import Ledger

    ledger = Ledger(uri)
    runs = ledger.runs(ledger.experiment_id("secure"))
    assert len(runs) == 2 and {r.status for r in runs} == {"FINISHED"}
    for record in runs:
        assert len(ledger.client.get_metric_history(record.run_id, "loss")) == 4


def test_orchs_batch_route_takes_writes_from_an_administrator_only(secured):
    """The route that records many runs' journals in one transaction (tracking/server_app.py) asks for the
    server's credentials, and writes only for an administrator: its writes may touch any run."""
    from orchestrator.tracking.server_app import ROUTE

    uri = secured["info"].uri
    admin = credentials(secured)

    def post(body: bytes, auth: tuple[str, str] | None) -> tuple[int, dict]:
        req = urllib.request.Request(f"{uri}{ROUTE}", data=body, headers={"Content-Type": "application/json"})
        if auth:
            req.add_header("Authorization", "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    assert post(b"[]", None)[0] == 401
    assert post(b"[]", (admin[0], "wrong"))[0] == 401
    assert post(b"[]", admin) == (200, {"recorded": 0})
    assert post(b"{not json", admin)[0] == 400
    # a user MLflow's auth app knows but who is no administrator
    create = urllib.request.Request(
        f"{uri}/api/2.0/mlflow/users/create",
        data=json.dumps({"username": "student", "password": "a-long-password-1"}).encode(),
        headers={"Content-Type": "application/json"},
    )
    create.add_header("Authorization", "Basic " + b64encode(f"{admin[0]}:{admin[1]}".encode()).decode())
    with urllib.request.urlopen(create, timeout=30) as response:
        assert response.status == 200
    status, answer = post(b"[]", ("student", "a-long-password-1"))
    assert status == 403 and "administrator" in answer["error"]
    missing = json.dumps([{"run_id": "f" * 32, "metrics": [["loss", 1.0, 1, 0]], "tags": {}}]).encode()
    assert post(missing, admin)[0] == 409  # a run it does not have: nothing committed, MLflow's API decides


def test_kill_9_of_the_leader_leaves_no_orphan_behind(secured):
    """Last in this module: it ends the server. SIGKILL the recorded pid only (not its group)."""
    run_dir, info = secured["run_dir"], secured["info"]
    os.kill(info.pid, signal.SIGKILL)
    wait_for(lambda: not server._is_ours(info.pid), timeout=30, what="the leader gone")
    left = server.orphans(info.pid)
    assert left, "mlflow server runs uvicorn as its child: it outlives a SIGKILLed leader"
    state = server.status(run_dir)
    assert state["running"] and state["orphaned"] == left, state  # not "no server"
    from orchestrator.errors import InputError

    with pytest.raises(InputError, match="already running"):
        server.start(info.backend_store_uri, Path(info.artifacts), port=info.port, run_dir=run_dir)
    assert server.stop(run_dir), "stop reaches the group, though its leader is gone"
    wait_for(lambda: not server.orphans(info.pid), timeout=30, what="the whole group gone")
    wait_for(lambda: server.port_free("127.0.0.1", info.port), timeout=30, what="the port free")
    assert not server.healthy(info.uri)


def test_start_refuses_a_port_in_use(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        from orchestrator.errors import InputError

        began = time.monotonic()
        with pytest.raises(InputError, match=f"port {port}"):
            server.start(f"sqlite:///{tmp_path / 'x.db'}", tmp_path / "a", port=port, run_dir=tmp_path / "run")
        assert time.monotonic() - began < 5, "refused before anything starts"
    assert not (tmp_path / "run").exists()
