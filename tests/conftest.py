"""Fixtures shared by every test module: an isolated MLflow store and workdir per test, and helpers to
write specs and call the `orch` CLI in-process or as a real subprocess."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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
        result = CliRunner().invoke(app, [*args, "--tracking-uri", self.uri] if args[0] in _URI_COMMANDS else list(args))
        if check and result.exit_code != 0:
            raise AssertionError(f"orch {' '.join(args)} exited {result.exit_code}:\n{result.output}\n{result.exception!r}")
        return result

    def orch_process(self, *args: str, **kwargs) -> subprocess.Popen:
        """The CLI as a real process (for signals)."""
        cmd = [*ORCH, *args]
        if args[0] in _URI_COMMANDS:
            cmd += ["--tracking-uri", self.uri]
        return subprocess.Popen(cmd, cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)}, **kwargs)

    def ledger(self):
        from orchestrator.tracking.ledger import Ledger
        return Ledger(self.uri)

    def seed_runs(self, experiment: str):
        ledger = self.ledger()
        experiment_id = ledger.experiment_id(experiment)
        return ledger.runs(experiment_id) if experiment_id else []


_URI_COMMANDS = {"submit", "run", "status", "logs", "sync", "cancel", "compare"}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path)
