"""Fixtures shared by every test module: an isolated MLflow store and workdir per test, and helpers to
write specs and call the `orch` CLI in-process or as a real subprocess."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parent.parent
ORCH = [sys.executable, "-m", "orchestrator"]

# A shell starting the suite in the background (`pytest &`, nohup) hands it SIGINT ignored, and every process
# it starts inherits that: the tests' Ctrl-C to `orch submit`, and Ray's cancel (a KeyboardInterrupt in the
# task), would then do nothing. A Python handler here is reset to the default in every exec'd child.
signal.signal(signal.SIGINT, signal.default_int_handler)


class Store:
    """A tmp MLflow sqlite store + run-directory root; ``orch(...)`` runs the CLI against it."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root / 'mlflow.db'}"
        self.workdir = root / "jobs"

    def spec(self, doc: dict, name: str = "spec.yaml") -> Path:
        doc = {"workdir": str(self.workdir), **doc}
        path = self.root / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def orch(self, *args: str, check: bool = False):
        """The CLI in this process (fast); returns typer's Result (exit_code, output)."""
        from orchestrator.cli import app

        result = CliRunner().invoke(
            app, [*args, "--tracking-uri", self.uri] if args[0] in _URI_COMMANDS else list(args)
        )
        if check and result.exit_code != 0:
            raise AssertionError(
                f"orch {' '.join(args)} exited {result.exit_code}:\n{result.output}\n{result.exception!r}"
            )
        return result

    def orch_process(self, *args: str, **kwargs) -> subprocess.Popen:
        """The CLI as a real process (for signals)."""
        cmd = [*ORCH, *args]
        if args[0] in _URI_COMMANDS:
            cmd += ["--tracking-uri", self.uri]
        return subprocess.Popen(
            cmd,
            cwd=self.root,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            **kwargs,
        )

    def ledger(self):
        from orchestrator.tracking.ledger import Ledger

        return Ledger(self.uri)

    def seed_runs(self, experiment: str):
        ledger = self.ledger()
        experiment_id = ledger.experiment_id(experiment)
        return ledger.runs(experiment_id) if experiment_id else []


_URI_COMMANDS = {"submit", "run", "status", "logs", "sync", "cancel", "compare", "ls", "delete", "reproduce"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)


# -- the real services some tests share -----------------------------------------------------------------
RAY_ENV = (
    "RAY_TMPDIR",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_AUTH_MODE",
    "RAY_USAGE_STATS_ENABLED",
    "RAY_ADDRESS",
    "RAY_AIR_NEW_OUTPUT",
)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for every Ray test of the session, in a short temp dir (Ray's unix socket paths must stay
    under 107 characters) with its own auth token, never ~/.ray; shut down and removed at the end."""
    root = Path(tempfile.mkdtemp(prefix="orch-ray-", dir="/tmp"))
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["RAY_TMPDIR"] = str(root / "t")
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(root / "auth_token")
    from orchestrator.backends.ray_connect import connect
    from orchestrator.backends.ray_settings import RaySettings

    ray = connect(None, RaySettings(num_cpus=2))
    yield ray
    ray.shutdown()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def stack():
    """A real PostgreSQL (cluster/dev/start-postgres.sh, its own data directory and port) and one real
    ``mlflow server`` on it, on loopback: started once per session, brought back up when a test killed the
    server and failed before restarting it, stopped at exit (tests/support.py)."""
    from support import shared_stack

    return shared_stack()


# -- markers from the services a test uses: `pytest -m "not slurm and not ray and not server"` is the fast run
SERVICE_MARKERS = {"slurm": "slurm", "ray_local": "ray", "stack": "server", "chromium": "server"}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, marker in SERVICE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
