"""RunContext: the only thing a workload sees of the orchestrator. No MLflow, Slurm or Ray in here."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.job import metric_rules
from orchestrator.job.journal import JournalWriter
from orchestrator.job.rundir import RunDir, atomic_write, open_trusted
from orchestrator.vocabulary import Event


class RunContext:
    """What a workload gets: ``seed``, ``rng`` (numpy Generator), ``device``, ``cpus``, ``log(step, **m)``,
    ``save_checkpoint(obj)`` / ``load_checkpoint()``, ``warn(message)``, ``artifact_dir`` (files there become MLflow
    artifacts). ``on_log`` callbacks let Ray Tune see every ``log`` (for ASHA) without the workload knowing."""

    def __init__(self, seed: int, run_dir: RunDir, journal: JournalWriter, device: str = "cpu", cpus: int = 1):
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.device = device
        self.cpus = cpus
        self.run_dir = run_dir
        self.journal = journal
        self.last_step: int | None = None
        self.on_log: list[Callable[[int, dict[str, float]], None]] = []

    @property
    def artifact_dir(self) -> Path:
        self.run_dir.artifacts.mkdir(parents=True, exist_ok=True)
        return self.run_dir.artifacts

    def log(self, step: int, **metrics: float) -> None:
        metrics = {k: float(v) for k, v in metrics.items()}
        metric_rules.check(int(step), metrics)  # a name MLflow refuses fails this run, not the store's ingestion
        self.journal.write(Event.METRICS, step=int(step), metrics=metrics)
        self.last_step = int(step)
        for callback in self.on_log:
            callback(int(step), metrics)

    report = log

    def warn(self, message: str) -> None:
        """Something the run's reader must know though the run goes on (a choice at the edge of a grid):
        journaled, printed to the run's stderr, and tagged ``orch.warning`` on the MLflow run."""
        self.journal.write(Event.WARNING, step=self.last_step, message=str(message))
        print(f"WARNING: {message}", file=sys.stderr, flush=True)

    def save_checkpoint(self, state: Any) -> None:
        """Pickle ``state`` atomically (numpy arrays, torch tensors and RNG states all pickle).
        Save everything the rest of the run depends on, RNG states included, so a resume equals
        an uninterrupted run."""
        atomic_write(self.run_dir.checkpoint, pickle.dumps({"step": self.last_step, "state": state}, protocol=5))
        self.journal.write(Event.CHECKPOINT, step=self.last_step)

    def load_checkpoint(self) -> Any | None:
        """The state of the last ``save_checkpoint`` of this run (from an earlier attempt), or None."""
        if not self.run_dir.checkpoint.exists():
            return None
        with open_trusted(self.run_dir.checkpoint) as f:  # unpickling runs code: the user's own file only
            saved = pickle.load(f)
        self.last_step = saved["step"]
        return saved["state"]
