"""An MLflow tracking server for a lab's cluster: ``orch server start|stop|status``.

One sqlite file serves one machine; many jobs on many nodes need a server in front of a real database
(PostgreSQL; ``cluster/dev/start-postgres.sh`` makes one). The server runs in its own process group, its
pid, address and log under a run folder, so ``stop`` ends exactly what ``start`` started and nothing else.
``orch server start`` turns on MLflow's basic-auth app (tracking/auth.py): on a login node every user can
reach 127.0.0.1. It binds to 127.0.0.1 unless told otherwise, and warns when told otherwise."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.job.liveness import group_alive
from orchestrator.spec.tracking_uri import sqlite_path
from orchestrator.tracking import server_app
from orchestrator.tracking.auth import private_dir, remember, server_credentials

RUN_DIR = Path("mlruns/run/server")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
# The first start on an empty PostgreSQL database runs MLflow's schema migrations: allow for it.
READY_TIMEOUT_S = 240.0
STOP_GRACE_S = 20.0


@dataclass
class ServerInfo:
    pid: int
    host: str
    port: int
    backend_store_uri: str
    artifacts: str
    log: str
    started_at: float
    auth: bool = False

    @property
    def uri(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def _info_file(run_dir: Path) -> Path:
    return run_dir / "server.json"


def read_info(run_dir: Path = RUN_DIR) -> ServerInfo | None:
    path = _info_file(run_dir)
    if not path.exists():
        return None
    return ServerInfo(**json.loads(path.read_text()))


def _is_ours(pid: int) -> bool:
    """The pid is alive and is still an ``mlflow server`` (not a recycled pid of something else)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"mlflow" in b" ".join(cmdline) and b"server" in cmdline


def healthy(uri: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def redact(uri: str) -> str:
    """A database URI without its password, for logs and status output."""
    scheme, sep, rest = uri.partition("://")
    if "@" in rest and ":" in rest.split("@", 1)[0]:
        user = rest.split("@", 1)[0].split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{rest.split('@', 1)[1]}"
    return uri


def normalise_backend(uri: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; orch ships psycopg2 (pyproject)."""
    if uri.startswith("postgresql://"):
        return "postgresql+psycopg2://" + uri[len("postgresql://") :]
    return uri


def _check_backend(uri: str) -> None:
    if not uri.startswith(("sqlite:///", "postgresql://", "postgresql+psycopg2://", "mysql")):
        raise InputError(
            f"expected a sqlite:/// or postgresql:// database URI, got '{redact(uri)}'", "--backend-store-uri"
        )


def start(
    backend_store_uri: str,
    artifacts: Path,
    host: str = "127.0.0.1",
    port: int = 5000,
    run_dir: Path = RUN_DIR,
    workers: int = 1,
    timeout_s: float = READY_TIMEOUT_S,
    warn=lambda message: print(message, file=sys.stderr),
    auth: bool = False,
) -> ServerInfo:
    """Start ``mlflow server`` and wait until it answers /health. Raises RuntimeError with the log's tail
    if it dies or does not answer in time (it is then stopped). ``auth``: MLflow's basic-auth app, one
    admin user whose credentials only this user can read (tracking/auth.py; the CLI's default)."""
    _check_backend(backend_store_uri)
    backend_store_uri = normalise_backend(backend_store_uri)
    run_dir = run_dir.resolve()
    current = read_info(run_dir)
    if current is not None and (_is_ours(current.pid) or orphans(current.pid)):
        raise InputError(
            f"a server started from {run_dir} is already running (pid {current.pid}, "
            f"{current.uri}); `orch server stop` first",
            str(run_dir),
        )
    if auth:
        import importlib.util

        if importlib.util.find_spec("flask_wtf") is None:  # MLflow's auth app dies on start without it
            raise InputError(
                "the authenticated server needs Flask-WTF (pip install 'mlflow[auth]'); "
                "or --no-auth, if every user of this machine may read and change every run",
                "--auth",
            )
    if not port_free(host, port):  # an orphaned server (or anything else) answering there would pass for ours
        raise InputError(
            f"port {port} on {host} is in use; stop what listens there (`orch server stop`, or "
            "find it with `ss -ltnp`) or pick another with --port",
            "--port",
        )
    if host not in LOOPBACK:
        warn(
            f"warning: binding the MLflow server to {host}: anyone who can reach port {port} can try it"
            + ("" if auth else "; it has NO authentication: they can read and change every run")
            + ". Prefer 127.0.0.1 and an SSH tunnel."
        )
    database = sqlite_path(backend_store_uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    artifacts = artifacts.resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "server.log"
    # The server proxies artifacts into a directory (on a cluster: the shared filesystem), so clients
    # anywhere upload through HTTP and need no access to that directory.
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--backend-store-uri",
        backend_store_uri,
        "--serve-artifacts",
        "--artifacts-destination",
        artifacts.as_uri(),
    ]
    if host not in LOOPBACK:
        command += ["--allowed-hosts", "*"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    # MLflow 3 also starts a job runner with ~7 huey consumer processes (GenAI jobs orch does not use):
    # each imports mlflow, which slows the start and costs ~1 GB. Off unless the user turns it on.
    env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
    if not backend_store_uri.startswith("sqlite"):
        # SQLAlchemy's default pool (5 + 10 overflow) is smaller than uvicorn's 40 request threads: with
        # 64 jobs pushing at once, requests timed out waiting for a connection (measured). 50 per worker
        # process stays within start-postgres.sh's max_connections=200 for up to 3 workers.
        env.setdefault("MLFLOW_SQLALCHEMYSTORE_POOL_SIZE", "20")
        env.setdefault("MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW", "30")
    credentials = None
    # MLflow's app with orch's one-transaction route for many runs' journals (server_app.py), with MLflow's
    # basic-auth app underneath when authenticated
    command += ["--app-name", "orch-server"]
    env[server_app.AUTH_ENV] = "1" if auth else "0"
    env[server_app.LOCK_ENV] = str(run_dir / "app.lock")
    if auth:
        credentials, auth_env = auth_setup(run_dir)
        env.update(auth_env)  # the password reaches the server through its environment (0400 in /proc)
    proc = spawn(command, log, env)
    info = ServerInfo(proc.pid, host, port, backend_store_uri, str(artifacts), str(log), time.time(), auth)
    _info_file(run_dir).write_text(json.dumps(asdict(info), indent=1))
    (run_dir / "server.pid").write_text(f"{proc.pid}\n")
    try:
        wait_healthy(proc, info.uri, timeout_s, log)
    except RuntimeError:
        stop(run_dir)
        raise
    if credentials is not None:
        remember(info.uri, credentials)
    return info


def auth_setup(run_dir: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The basic-auth app's config (its user store beside the server's pid files, nobody but the admin
    allowed anything) and the environment that gives the server its admin password."""
    import secrets

    auth_dir = private_dir(run_dir / "auth")
    credentials = server_credentials(auth_dir)
    config = auth_dir / "basic_auth.ini"
    text = (
        "[mlflow]\ndefault_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{auth_dir / 'basic_auth.db'}\n"
        f"admin_username = {credentials['username']}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    fd = os.open(config, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return credentials, {
        "MLFLOW_AUTH_CONFIG_PATH": str(config),
        "MLFLOW_AUTH_ADMIN_PASSWORD": credentials["password"],
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
    }


def port_free(host: str, port: int) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def orphans(pgid: int) -> list[int]:
    """Live ``mlflow`` processes left in the server's process group after its leader died (``kill -9`` of
    the recorded pid leaves uvicorn's children serving)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid or fields[0] == "Z":
                continue
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"mlflow" in cmdline or b"uvicorn" in cmdline or b"gunicorn" in cmdline:
            found.append(int(stat.parent.name))
    return found


# -- the process: shared with `orch ui` ------------------------------------------------------------
def spawn(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start ``command`` in its own session (its own process group), output appended to ``log``: stopping
    the group then reaches uvicorn's worker processes too."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def wait_healthy(proc: subprocess.Popen, uri: str, timeout_s: float, log: Path) -> None:
    """Wait until ``uri`` answers /health; RuntimeError with the log's tail if the server dies or does not
    answer within ``timeout_s`` (the caller stops it)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {proc.returncode}:\n{_tail(log)}")
        if healthy(uri, timeout=1.0):
            return
        time.sleep(0.25)
    raise RuntimeError(f"mlflow server did not answer {uri}/health within {timeout_s:.0f} s:\n{_tail(log)}")


def stop_group(pgid: int, grace_s: float = STOP_GRACE_S, kill: bool = False) -> None:
    """SIGTERM to the process group (SIGKILL with ``kill=True``), SIGKILL to what is left after ``grace_s``;
    returns once no live member remains."""
    try:
        os.killpg(pgid, signal.SIGKILL if kill else signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and group_alive(pgid):
        time.sleep(0.1)
    if group_alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        while group_alive(pgid):
            time.sleep(0.05)


def stop(run_dir: Path = RUN_DIR, grace_s: float = STOP_GRACE_S, kill: bool = False) -> bool:
    """Stop the server started from ``run_dir``: SIGTERM to its process group, SIGKILL after ``grace_s``
    (at once with ``kill=True``, e.g. to simulate a crash). False when none was running."""
    run_dir = run_dir.resolve()
    info = read_info(run_dir)
    if info is None or not (_is_ours(info.pid) or orphans(info.pid)):
        _forget(run_dir)
        return False
    stop_group(info.pid, grace_s, kill)  # the group, even when its leader is gone: its children serve on
    _forget(run_dir)
    return True


def status(run_dir: Path = RUN_DIR) -> dict:
    info = read_info(run_dir.resolve())
    if info is None:
        return {"running": False}
    leader = _is_ours(info.pid)
    left = [] if leader else orphans(info.pid)
    alive = leader or bool(left)
    return {
        "running": alive,
        "healthy": alive and healthy(info.uri),
        "uri": info.uri,
        "pid": info.pid,
        "orphaned": left,
        "auth": info.auth,
        "backend_store_uri": redact(info.backend_store_uri),
        "artifacts": info.artifacts,
        "log": info.log,
        "uptime_s": round(time.time() - info.started_at, 1) if alive else None,
    }


def _forget(run_dir: Path) -> None:
    for name in ("server.json", "server.pid"):
        (run_dir / name).unlink(missing_ok=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
