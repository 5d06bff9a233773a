"""orch's words, defined once: the statuses a run, a job and a trial can be in, the events of a run's
journal, the roles of orch's MLflow runs and every ``orch.*`` tag orch writes. String enums: they are
their strings in JSON, in MLflow and in comparisons, and code that reads them cannot mistype one. Floor 0:
the jobs (``job/``) and the orchestrator name things the same way."""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """A run's record (MLflow's run statuses, by the same names): queued, running, or how it ended."""

    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    FAILED = "FAILED"
    KILLED = "KILLED"  # cancelled, interrupted or lost with its node: not the run's own failure


class JobPhase(StrEnum):
    """What a backend says of a job: queued, running, its process ended (the journal says how), or no trace."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    LOST = "LOST"


class TrialStatus(StrEnum):
    """An ``orch tune`` trial, as the live table and the sweep's summary show it."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    FINISHED = "FINISHED"
    STOPPED = "STOPPED"  # stopped early by the scheduler (ASHA, PBT)
    FAILED = "FAILED"


class Event(StrEnum):
    """The ``event`` of a journal line (docs/architecture.md, "The journal")."""

    START = "start"
    METRICS = "metrics"
    CHECKPOINT = "checkpoint"
    WARNING = "warning"
    DEVICE = "device"
    SYSTEM = "system"  # a sample of the run's CPU, memory and GPUs (job/sysmetrics.py); the last: its totals
    REQUEUE = "requeue"
    PHASE = "phase"  # a schedule's params take over from a step on (a replayed PBT schedule, an exploited trial)
    END = "end"


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
    TUNING_TRIALS, TUNING_SWEEP = "orch.tuning.trials", "orch.tuning.sweep"  # on a group: what chose its params
    SEEDS_REQUESTED = "orch.seeds_requested"  # on a group: how many seeds were asked for
    # where and how a seed runs
    BACKEND, JOB_ID, RUN_DIR = "orch.backend", "orch.job_id", "orch.run_dir"
    DRIVER_HOST, VIA = "orch.driver_host", "orch.via"
    HOST, PID, ATTEMPT, RESTART_COUNT = "orch.host", "orch.pid", "orch.attempt", "orch.restart_count"
    RESUMED_FROM_STEP, CHECKPOINT_STEP = "orch.resumed_from_step", "orch.checkpoint_step"
    DEVICE, GPU_MODEL, GPU_COUNT = "orch.device", "orch.gpu.model", "orch.gpu.count"  # job/device.py: the run's device
    GPU_DRIVER, CUDA_VERSION, CUDA_VISIBLE = "orch.gpu.driver", "orch.cuda.version", "orch.cuda_visible_devices"
    CPU_MODEL = "orch.cpu.model"
    SCHED_PREFIX = "orch.sched."  # the scheduler's accounting of an ended job (driver.record_accounting)
    SCHED_STATE = "orch.sched.state"  # e.g. COMPLETED, OUT_OF_MEMORY, TIMEOUT, CANCELLED by 1000
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
