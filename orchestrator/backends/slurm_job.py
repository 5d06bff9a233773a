"""What runs inside a Slurm job (imports no MLflow): the callables submitit pickles into each array task
(one run, a pack of ``runs_per_job`` runs, or one rank of a multi-task run), and the requeue handling on
SIGUSR2 / SIGTERM: a preemption or an approaching time limit journals ``requeue``, not KILLED, and the same
call is resubmitted."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from submitit.core.utils import DelayedSubmission
from submitit.helpers import Checkpointable

from orchestrator.job.pack import Pack
from orchestrator.job.rundir import RunDir, output_to


class SlurmRun(Checkpointable):
    """The callable each array task runs. Kept free of MLflow: a job imports only the worker."""

    def __init__(self, max_requeues: int):
        self.max_requeues = max_requeues

    def __call__(self, run_dir: str) -> str:
        from orchestrator.job import jobpath, worker

        jobpath.drop_working_directory()
        worker.requeue_probe = requeued_by_slurm
        # submitit requeues with `subprocess.check_call(["scontrol", "requeue", ...])`: a refusal raises a
        # CalledProcessError that carries neither scontrol's answer nor the fact that no requeue happened.
        # Its SlurmJobEnvironment is made inside submitit's process_job, so the method is replaced here, in
        # the job's own process only.
        from submitit.slurm.slurm import SlurmJobEnvironment

        SlurmJobEnvironment._requeue = _requeue_or_say_why  # type: ignore[method-assign, assignment]
        with output_to(RunDir(Path(run_dir)), getattr(self, "rank", 0)):  # a rank > 0: its own logs
            return worker.execute(run_dir)

    def checkpoint(self, run_dir: str) -> DelayedSubmission | None:  # type: ignore[override]  # None: no requeue
        """Called by submitit's SIGUSR2 handler (preemption, or the time limit approaching)."""
        from orchestrator.job import worker

        restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0))
        if restarts >= self.max_requeues:
            print(
                f"orch: requeued {restarts} times already (max_requeues={self.max_requeues}): the run ends here",
                file=sys.stderr,
                flush=True,
            )
            return None  # submitit raises UncompletedJobError in the workload: the run ends FAILED, saying why
        worker.request_requeue(
            f"Slurm signal (preemption or time limit); requeue {restarts + 1} of at most {self.max_requeues}"
        )
        return DelayedSubmission(self, run_dir)


class SlurmDistRun(SlurmRun):
    """The callable every task of a multi-task run's job runs (``--nodes N --ntasks-per-node T``): one rank.

    Its place in the group comes from submitit's ``TorchDistributedEnvironment`` (MASTER_ADDR: the job's first
    node; MASTER_PORT: drawn from the job id; RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE from the task's
    SLURM_* variables, read by submitit's JobEnvironment), exported as torchrun's variables; every task sees its
    node's GPUs and takes ``cuda:LOCAL_RANK`` (job/worker.py). The attempt's token is the job id and restart
    count, the same in every task. On SIGUSR2 submitit calls ``checkpoint`` in task 0 only: rank 0 journals the
    requeue and requeues the whole job; the other ranks end with it and all resume from rank 0's checkpoint."""

    def __call__(self, run_dir: str) -> str:
        from submitit.helpers import TorchDistributedEnvironment

        from orchestrator.job import dist

        env = TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
        os.environ[dist.TOKEN_ENV] = f"{os.environ.get('SLURM_JOB_ID', 'job')}.{restarts}"
        self.rank = env.rank
        return super().__call__(run_dir)


_current_pack: Pack | None = None  # the pack this job process runs (SlurmPack), for the requeue hooks below


class SlurmPack(Checkpointable):
    """The callable of an array task holding ``runs_per_job`` runs (job/pack.py): one process per run."""

    def __init__(self, max_requeues: int, gpu_share: float):
        self.max_requeues = max_requeues
        self.gpu_share = gpu_share

    def __call__(self, run_dirs: list[str]) -> str:
        global _current_pack
        from submitit.slurm.slurm import SlurmJobEnvironment

        SlurmJobEnvironment._requeue = _requeue_or_say_why  # type: ignore[method-assign, assignment]
        _current_pack = Pack(run_dirs, self.gpu_share, self.max_requeues, probe=f"{__name__}:requeued_by_slurm")
        return ",".join(_current_pack.run())

    def checkpoint(self, run_dirs: list[str]) -> DelayedSubmission | None:  # type: ignore[override]
        """SIGUSR2: each run journals ``requeue`` (or, past max_requeues, ends FAILED) and stops; then the
        task is requeued unless every run has ended."""
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0))
        if _current_pack is not None:
            _current_pack.checkpoint()
        if restarts >= self.max_requeues:
            return None
        return DelayedSubmission(self, run_dirs)


def scontrol_requeue(job_id: str) -> subprocess.CompletedProcess:
    return subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)


def _requeue_or_say_why(env: Any, countdown: int) -> None:
    """submitit's ``SlurmJobEnvironment._requeue``, keeping Slurm's answer when it refuses (``JobRequeue=0``
    in slurm.conf, or a job submitted ``--no-requeue``: "Requested operation is presently disabled")."""
    try:
        proc = scontrol_requeue(env.job_id)
    except (OSError, subprocess.TimeoutExpired) as err:
        _refused(f"Slurm could not requeue job {env.job_id}: scontrol requeue: {err}")
    if proc.returncode != 0:
        answer = (proc.stderr or proc.stdout).strip() or f"exit status {proc.returncode}"
        _refused(f"Slurm refused to requeue job {env.job_id}: {answer}")
    print(f"orch: requeued job {env.job_id} ({countdown} time-outs left)", file=sys.stderr, flush=True)


def _refused(message: str) -> None:
    from orchestrator.job import worker

    if _current_pack is not None:  # the runs already journaled `requeue` in their own processes: close them
        _current_pack.close_requeued(message)
    worker.requeue_refused(message)


def requeued_by_slurm() -> str | None:
    """On SIGTERM: is Slurm requeueing this job (``scontrol requeue``, preemption with PreemptMode=REQUEUE)
    rather than cancelling it? A requeue has already raised the job's restart count above this attempt's."""
    job_id = os.environ.get("SLURM_JOB_ID")
    if not job_id:
        return None
    try:
        out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\bRestarts=(\d+)", out)
    if match and int(match.group(1)) > int(os.environ.get("SLURM_RESTART_COUNT", 0)):
        return f"Slurm requeued the job (restart {match.group(1)})"
    return None
