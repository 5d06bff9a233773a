"""Helpers the test modules share (fixtures live in conftest.py): waiting on a condition, a free loopback
port, stopping a process group a test started, and the real tracking stack (PostgreSQL + ``mlflow server``)
that the server tests share."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from orchestrator.tracking import server

REPO = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 60.0, what: str = "condition", every: float = 0.1):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextlib.contextmanager
def submitting(store, spec: Path):
    """``orch submit SPEC`` running in its own process group for the block (the local backend's runs live as long
    as it does); Ctrl-C'd at the end, as a user would stop it, and killed if it does not stop."""
    from conftest import ORCH

    proc = subprocess.Popen(
        [*ORCH, "submit", str(spec), "--tracking-uri", store.uri],
        cwd=store.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have ended already (the test waited for it)
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            stop_group(proc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process group this test started (``start_new_session``), SIGKILL what is left."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)


class Stack:
    def __init__(self):
        # Not pytest's tmp_path: its parents are 0700 and the 'postgres' user must reach its data directory.
        self.root = Path(tempfile.mkdtemp(prefix="orch-stack-"))
        self.root.chmod(0o755)
        self.pg_env = {**os.environ, "ORCH_PG_DIR": str(self.root / "pg"), "ORCH_PG_PORT": str(free_port())}
        out = subprocess.run(
            [str(REPO / "cluster/dev/start-postgres.sh")], env=self.pg_env, capture_output=True, text=True, timeout=900
        )
        if out.returncode != 0:
            raise RuntimeError(f"start-postgres.sh failed:\n{out.stdout}\n{out.stderr}")
        uri_file = Path(out.stdout.strip().splitlines()[-1])
        assert uri_file == self.root / "pg" / "uri" and "postgresql" not in out.stdout  # no password on stdout
        self.db_uri = uri_file.read_text().strip()
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
