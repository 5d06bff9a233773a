"""``run.json``: everything a worker needs to run one run, written by the orchestrator at submit into the run's
directory (``RunDir.create``) and read back, typed, by the worker, the backends, ingestion and notifications
(``RunDir.load``). Fields a newer orch writes are kept, not refused (``extra="allow"``): a job queued by one
version may be read by another."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class RunJob(BaseModel):
    model_config = ConfigDict(extra="allow")

    run: dict[str, Any]  # the Run (spec/plan.py) as a dict: workload, params, seed, variant, grid point, ...
    run_id: str  # its MLflow run
    experiment: str = ""
    experiment_id: str = ""
    tracking_uri: str = ""
    cpus: int = 1
    gpus: float = 0.0  # per process: a multi-task run's tasks each get this many
    nodes: int = 1  # a multi-task run (torch.distributed): nodes x tasks_per_node processes, one run
    tasks_per_node: int = 1
    mem_gb: float | None = None
    metric: str = ""  # the main final metric, and which way is better
    mode: str = "min"
    module: str | None = None  # the workload's module, resolved at submit (None: by name in the job)
    code: dict[str, Any] | None = None  # the code snapshot the job runs (job/snapshot.py)
    submit_dir: str = ""
    armed: str | None = None  # this submission's mark (RunDir.create): each start of the run journals it
    system_metrics_s: float = 10.0  # job/sysmetrics.py (0: off)
    stall_after_s: float | None = None  # job/stall.py (None: from the run's logging rate)
    notify: dict[str, Any] | None = None  # tracking/notify.py

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks_per_node
