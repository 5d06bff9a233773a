"""RunContext: the only thing a workload sees of the orchestrator. No MLflow, Slurm or Ray in here."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orchestrator.job import metric_rules
from orchestrator.job.rundir import RunDir, atomic_write, open_trusted
from orchestrator.vocabulary import Event

if TYPE_CHECKING:
    from orchestrator.job.dist import DistEnv


class RunContext:
    """What a workload gets: ``seed``, ``rng`` (numpy Generator), ``device``, ``cpus``, ``log(step, **m)``,
    ``save_checkpoint(obj)`` / ``load_checkpoint()``, ``warn(message)``, ``artifact_dir`` (files there become MLflow
    artifacts). ``on_log`` callbacks let Ray Tune see every ``log`` (for ASHA) without the workload knowing.

    A multi-task run (``resources.nodes`` x ``tasks_per_node``, job/dist.py) runs one RunContext per process:
    ``rank``, ``local_rank``, ``world_size``, ``is_main`` (rank 0), ``device`` (``cuda:<local_rank>`` on GPUs),
    ``dist_backend`` (nccl or gloo, the process group orch initialised) and ``barrier()``. Only rank 0 journals:
    on the other ranks ``log``, ``save_checkpoint`` and ``warn``'s journal line are no-ops (each rank computes
    the same numbers in lockstep, or rank 0's are the run's); every rank ``load_checkpoint``s rank 0's."""

    def __init__(
        self,
        seed: int,
        run_dir: RunDir,
        journal: Any,
        device: str = "cpu",
        cpus: int = 1,
        dist: DistEnv | None = None,
    ):
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.device = device
        self.cpus = cpus
        self.run_dir = run_dir
        self.journal = journal
        self.last_step: int | None = None
        self.on_log: list[Callable[[int, dict[str, float]], None]] = []
        self.on_checkpoint: list[Callable[[int | None], None]] = []  # after each save (job/phases.py: a phase's end)
        self.rank = dist.rank if dist else 0
        self.local_rank = dist.local_rank if dist else 0
        self.world_size = dist.world_size if dist else 1
        self.dist_backend: str | None = None  # set by the worker once the process group exists

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that journals metrics and writes checkpoints (always True in a one-process run)."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait until every rank of the run gets here (a no-op in a one-process run)."""
        if self.world_size > 1:
            from orchestrator.job.dist import barrier

            barrier()

    @property
    def artifact_dir(self) -> Path:
        self.run_dir.artifacts.mkdir(parents=True, exist_ok=True)
        return self.run_dir.artifacts

    def log(self, step: int, **metrics: float) -> None:
        metrics = {k: float(v) for k, v in metrics.items()}
        metric_rules.check(int(step), metrics)  # a name MLflow refuses fails this run, not the store's ingestion
        if not self.is_main:  # rank 0 journals the run's metrics; the step is kept for a checkpoint's count
            self.last_step = int(step)
            return
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
        an uninterrupted run. On a rank > 0 of a multi-task run: nothing (rank 0's checkpoint is the run's)."""
        if not self.is_main:
            return
        atomic_write(self.run_dir.checkpoint, pickle.dumps({"step": self.last_step, "state": state}, protocol=5))
        self.journal.write(Event.CHECKPOINT, step=self.last_step)
        for callback in self.on_checkpoint:
            callback(self.last_step)

    def load_checkpoint(self) -> Any | None:
        """The state of the last ``save_checkpoint`` of this run (from an earlier attempt), or None."""
        if not self.run_dir.checkpoint.exists():
            return None
        with open_trusted(self.run_dir.checkpoint) as f:  # unpickling runs code: the user's own file only
            saved = pickle.load(f)
        self.last_step = saved["step"]
        return saved["state"]
