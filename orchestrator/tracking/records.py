"""orch's data model in MLflow, written down once: the run roles, the ``orch.*`` tag names, the statuses,
the record of a run, which attempt stands for a run key, and the paginated search every reader uses.

An experiment is one spec name. In it: one ``group`` run per configuration (variant x grid point; its
children are the seeds), one ``seed`` run per attempt at a run key, a ``sweep`` run per ``orch tune`` with
a ``trial`` child per trial, and a ``compare`` run per ``orch compare`` report."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from orchestrator.job.journal import FAILED, FINISHED, KILLED

RUNNING, SCHEDULED = "RUNNING", "SCHEDULED"
EXPERIMENT_KIND = "mlflow.experimentKind"  # an experiment tag: which page the MLflow UI opens it on
ACTIVE = (RUNNING, SCHEDULED)  # a job may still write to the run
TERMINAL = (FINISHED, FAILED, KILLED)
BATCH = 1000  # MLflow's limit of metrics (and tags) per log_batch
PAGE = 10000  # runs per search_runs page


class Role:
    """The ``orch.role`` tag: what a run stands for."""

    SEED, GROUP, TRIAL, SWEEP, COMPARE = "seed", "group", "trial", "sweep", "compare"


class Tag:
    """Every ``orch.*`` tag orch writes. Reading code says ``Tag.GROUP``, not a string that can be mistyped."""

    ROLE = "orch.role"
    # identity of a seed run and its group
    KEY, GROUP, VARIANT, GRID_POINT, SEED = "orch.key", "orch.group", "orch.variant", "orch.grid_point", "orch.seed"
    WORKLOAD, SPEC = "orch.workload", "orch.spec"
    KEY_SCHEME = "orch.key_scheme"  # how KEY and GROUP were computed (spec/identity.py)
    DEFAULTS = "orch.defaults"  # the params the key left out at their default (JSON)
    METRIC, MODE = "orch.metric", "orch.mode"  # the main metric and which way is better
    CHANCE = "orch.chance"  # on a group: the workload's chance levels (JSON)
    SEEDS_REQUESTED = "orch.seeds_requested"  # on a group: how many seeds were asked for
    # where and how a seed runs
    BACKEND, JOB_ID, RUN_DIR = "orch.backend", "orch.job_id", "orch.run_dir"
    DRIVER_HOST, VIA = "orch.driver_host", "orch.via"
    HOST, PID, ATTEMPT, RESTART_COUNT = "orch.host", "orch.pid", "orch.attempt", "orch.restart_count"
    RESUMED_FROM_STEP, CHECKPOINT_STEP = "orch.resumed_from_step", "orch.checkpoint_step"
    DEVICE, GPU_MODEL, GPU_COUNT = "orch.device", "orch.gpu.model", "orch.gpu.count"  # job/device.py: the run's device
    GPU_DRIVER, CUDA_VERSION, CUDA_VISIBLE = "orch.gpu.driver", "orch.cuda.version", "orch.cuda_visible_devices"
    CPU_MODEL = "orch.cpu.model"
    ERROR = "orch.error"  # why a run FAILED or was KILLED
    WARNING = "orch.warning"  # ctx.warn: what the run's reader must know
    SUPERSEDED_BY = "orch.superseded_by"  # a run redone by `orch run --force`
    # code version (tracking/codeversion.py)
    GIT_COMMIT, GIT_DIRTY = "orch.git_commit", "orch.git_dirty"
    CODE, CODE_SOURCE, COMMAND_LINE = "orch.code", "orch.code_source", "orch.command_line"  # job/snapshot.py
    # orch tune
    SWEEP, TRIAL_ID, SEEDS, TUNE_PATH = "orch.tune.sweep", "orch.tune.trial_id", "orch.seeds", "orch.tune.path"
    EARLY_STOPPED, STOPPED_AT_ITERATION = "orch.tune.early_stopped", "orch.tune.stopped_at_iteration"
    BEST_TRIAL = "orch.tune.best_trial"
    # orch compare
    BASELINE, BY = "orch.baseline", "orch.by"
    # orch export / import
    SOURCE_RUN_ID, SOURCE_URI = "orch.source_run_id", "orch.source_uri"


@dataclass(frozen=True)
class RunRecord:
    """What reconcile, status and compare read of a run: status, tags and latest metrics (no params)."""

    run_id: str
    status: str
    tags: dict[str, str]
    metrics: dict[str, float]
    start_time: int | None = None

    @property
    def key(self) -> str:
        return self.tags.get(Tag.KEY, "")


def by_key(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    """Attempts per run key, latest first."""
    grouped: dict[str, list[RunRecord]] = defaultdict(list)
    for record in records:
        grouped[record.key].append(record)
    for recs in grouped.values():
        recs.sort(key=lambda r: r.start_time or 0, reverse=True)
    return grouped


def standing(attempts: list[RunRecord]) -> RunRecord:
    """The attempt that stands for a run key (latest first): its FINISHED one if any, else the latest."""
    return next((r for r in attempts if r.status == FINISHED), attempts[0])


def latest_per_key(records: list[RunRecord]) -> list[RunRecord]:
    """One record per run key: the one that stands for it. Every reader counts runs this way."""
    return [standing(recs) for recs in by_key(records).values()]


def role_filter(role: str) -> str:
    return f"tags.`{Tag.ROLE}` = '{role}'"


def search_all(client: Any, experiment_id: str, filter_string: str = "", page: int = PAGE) -> list[Any]:
    """Every MLflow run of the experiment matching ``filter_string``, across all result pages."""
    runs: list[Any] = []
    token = None
    while True:
        found = client.search_runs([experiment_id], filter_string=filter_string, max_results=page, page_token=token)
        runs += list(found)
        token = found.token
        if not token:
            return runs


def chunks(items: list[Any], size: int = BATCH) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
