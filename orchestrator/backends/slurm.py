"""Slurm backend, through submitit.

- ``submit`` queues the runs of one submission as job arrays (split at the cluster's MaxArraySize) and
  returns at once; each array task runs ``worker.execute(run_dir)`` and writes only its run directory
  (the job folder on the shared filesystem), so compute nodes need no network.
- ``poll`` asks the scheduler ONCE for all the jobs it is given (sacct; squeue for what sacct does not
  know, or for everything when accounting is disabled or restricted).
- Crash safety (Dora's idea): before sbatch, every run directory gets ``scheduler.json`` with a token
  that is also the Slurm job name; after sbatch, the job id is added. A run whose orchestrator died in
  between is found again by that name, so it is neither lost nor queued twice.
- Preemption and time limits: the job function is a submitit ``Checkpointable``; on SIGUSR2 submitit
  calls ``checkpoint``, which tells the worker a requeue is under way (the journal says ``requeue``,
  not KILLED) and resubmits the same call. The workload's own ``ctx.save_checkpoint`` is what the next
  attempt resumes from, in the same MLflow run. Jobs are submitted ``--requeue`` (profile ``requeue``),
  so this holds on sites whose slurm.conf says ``JobRequeue=0``.
- Packing (``resources.runs_per_job``): one array task runs several runs at once (``SlurmPack``, through
  ``job/pack.py``), each with its own journal, checkpoint, requeue and MLflow run; every run of a pack
  has the task's job id.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import submitit
from submitit.core.utils import DelayedSubmission
from submitit.helpers import Checkpointable

from orchestrator.backends.base import DONE, LOST, PENDING, RUNNING, Backend, Job, JobState
from orchestrator.backends.slurm_profile import apply_profile, job_resources, load_profile
from orchestrator.errors import InputError
from orchestrator.job.journal import ended_last, running_now
from orchestrator.job.liveness import pid_alive
from orchestrator.job.pack import Pack
from orchestrator.job.rundir import RunDir, atomic_write, output_to
from orchestrator.spec.tracking_uri import default_uri

if TYPE_CHECKING:
    from orchestrator.spec.spec import Spec

JOB_NAME_PREFIX = "orch-"
QUERY_CACHE_S = 2.0       # follow() polls often; the scheduler is asked at most this often
CANCEL_WAIT_S = 15.0      # how long cancel waits for running jobs to journal their end
DEFAULT_MAX_ARRAY_SIZE = 1001

# Slurm job states (squeue %T / sacct State) -> orch's view of a job
_PENDING = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "CONFIGURING", "RESV_DEL_HOLD", "SPECIAL_EXIT",
            "RESIZING"}
_RUNNING = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "SUSPENDED", "STOPPED"}
_ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
          "DEADLINE", "REVOKED"}


# -- what runs in the job ----------------------------------------------------------------------------
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
        with output_to(RunDir(Path(run_dir))):
            return worker.execute(run_dir)

    def checkpoint(self, run_dir: str) -> DelayedSubmission | None:  # type: ignore[override]  # None: no requeue
        """Called by submitit's SIGUSR2 handler (preemption, or the time limit approaching)."""
        from orchestrator.job import worker
        restarts = int(os.environ.get("SLURM_RESTART_COUNT", 0))
        if restarts >= self.max_requeues:
            print(f"orch: requeued {restarts} times already (max_requeues={self.max_requeues}): the run ends here",
                  file=sys.stderr, flush=True)
            return None  # submitit raises UncompletedJobError in the workload: the run ends FAILED, saying why
        worker.request_requeue(f"Slurm signal (preemption or time limit); requeue {restarts + 1} of at most "
                               f"{self.max_requeues}")
        return DelayedSubmission(self, run_dir)


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


# -- scheduler.json: the run directory's record of its submission ------------------------------------
def read_record(run_dir: RunDir) -> dict[str, Any]:
    try:
        return json.loads(run_dir.scheduler_record.read_text())
    except (OSError, ValueError):
        return {}


def write_record(run_dir: RunDir, record: dict[str, Any]) -> None:
    atomic_write(run_dir.scheduler_record, json.dumps(record).encode(), durable=False)


# -- parsing scheduler output ------------------------------------------------------------------------
def expand_job_ids(field: str) -> list[str]:
    """``12_3`` -> [12_3]; ``12_[0-2,5%4]`` (pending array tasks, compressed) -> [12_0, 12_1, 12_2, 12_5]."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", field)
    if not match:
        return [field]
    base, spec = match.group(1), match.group(2).split("%")[0]
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def to_job_state(state: str, detail: str) -> JobState:
    """``state`` as Slurm prints it (sacct: "CANCELLED by 1000"), ``detail`` the exit code or reason."""
    name = state.split()[0] if state else ""
    detail = "" if detail in ("None", "0:0") else detail
    if name in _PENDING:
        return JobState(PENDING, detail or None)
    if name in _RUNNING:
        return JobState(RUNNING)
    if name == "COMPLETED" and not detail:
        return JobState(DONE)  # the journal says how the run ended
    return JobState(DONE, f"Slurm: {state}" + (f" ({detail})" if detail else ""))


class SchedulerError(RuntimeError):
    pass


class SlurmBackend(Backend):
    name = "slurm"
    blocking = False

    def __init__(self, profile=None, resources=None, min_query_interval_s: float = QUERY_CACHE_S):
        self.profile = profile
        self.resources = resources
        self.source = "resources"
        self.min_query_interval_s = min_query_interval_s
        self.calls: Counter[str] = Counter()  # scheduler commands run by this instance (benchmarks)
        self.sacct_ok: bool | None = None      # None: not tried yet; False: accounting disabled/unreachable
        self.last_error: str | None = None
        self._cache: dict[str, tuple[str, str]] = {}
        self._cache_time = 0.0

    @classmethod
    def resolve_spec(cls, spec: Spec, set_paths: list[str]) -> Spec:
        """The profile may put the run directories on the shared filesystem (its ``job_folder``)."""
        return apply_profile(spec)

    @classmethod
    def preview(cls, spec: Spec, n_runs: int) -> str | None:
        return preview_text(spec, n_runs)

    def describe(self) -> str | None:
        """A profile's setup: lines run in every job: say which file they came from."""
        return None if self.profile is None else f"cluster profile: {self.profile._file or self.profile.name}"

    @classmethod
    def from_spec(cls, spec: Spec | None, cluster: str | None = None, check: bool = True, **_: Any) -> SlurmBackend:
        """``cluster``: --cluster, else the spec's profile. The request is checked by ``sbatch --test-only``:
        an impossible one queues nothing."""
        if spec is None:
            return cls()
        backend = cls(load_profile(cluster or spec.cluster, f"{spec.source}: cluster", spec.slurm, spec.source),
                      spec.resources)
        backend.source = spec.source
        if check:
            backend.check_request(spec.source)
            backend.check_filesystems(spec)
        return backend

    # -- running scheduler commands ------------------------------------------------------------------
    def _run(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess:
        self.calls[cmd[0]] += 1
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except FileNotFoundError:
            raise SchedulerError(f"'{cmd[0]}' not found: is this a Slurm login node (or is Slurm on PATH)?") from None
        if check and proc.returncode != 0:
            raise SchedulerError(f"{' '.join(cmd[:3])}... failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    # -- submission ----------------------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        if self.profile is None or self.resources is None:
            raise SchedulerError("this SlurmBackend was made without a cluster profile: it can poll and cancel, "
                                 "not submit")
        return self.profile.slurm_parameters(self.resources)

    def _executor(self, folder: Path, job_name: str) -> submitit.SlurmExecutor:
        executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.profile.max_requeues)
        executor.update_parameters(job_name=job_name, **self.parameters())
        return executor

    def check_request(self, source: str = "resources") -> None:
        """Ask Slurm whether it could ever run one job of this request (``sbatch --test-only``): an
        impossible request (a GPU on a node without, an unknown partition) is refused before anything
        is created or queued."""
        self.profile.check(self.resources, source)
        with tempfile.TemporaryDirectory(prefix="orch-sbatch-") as tmp:
            script = Path(tmp) / "check.sh"
            script.write_text(self._executor(Path(tmp), "orch-check")._make_submission_file_text("true", "check"))
            proc = self._run(["sbatch", "--test-only", str(script)], check=False)
        if proc.returncode != 0:
            message = " ".join(line.removeprefix("sbatch: error: ").strip()
                               for line in proc.stderr.splitlines() if "error" in line) or proc.stderr.strip()
            if UNREACHABLE in message:  # not a refusal of the request: nobody answered it
                raise InputError(f"Slurm's controller does not answer ({message}); check `scontrol ping` on this "
                                 f"host (cluster profile '{self.profile.name}')", source, "backend")
            raise InputError(f"Slurm refuses this request with cluster profile '{self.profile.name}': {message} "
                             f"(asked: {self._request_summary()}){self._node_hint(message)}", source,
                             "resources.runs_per_job" if self.resources.runs_per_job > 1 else "resources")

    def _request_summary(self) -> str:
        p = {**self.parameters().get("additional_parameters", {}), **self.parameters()}
        keys = ("partition", "account", "qos", "constraint", "gres", "gpus", "gpus_per_node", "exclusive",
                "cpus_per_task", "mem", "time")
        return ", ".join(f"{k}={p[k]}" for k in keys if k in p)

    def node_hosts(self) -> set[str]:
        """The nodes this profile's jobs may land on, each by its address (NodeAddr), or by its host name
        when that is this host (the dev cluster's nodes are 127.0.0.1 under other names); one sinfo call."""
        from orchestrator.backends.sharedfs import local_addresses
        cmd = ["sinfo", "-h", "-N", "-o", "%n|%o"]
        if self.profile is not None and self.profile.partition:
            cmd[1:1] = ["-p", self.profile.partition]
        proc = self._run(cmd, check=False)
        here, hosts = local_addresses(), set()
        for line in proc.stdout.splitlines():
            names = [part.strip() for part in line.split("|") if part.strip()]
            hosts.add(next((name for name in names if name in here), names[-1] if names else ""))
        return hosts - {""}

    def check_filesystems(self, spec: Spec) -> None:
        """The job folder must be visible from the nodes (refused when it is node-local storage, a warning
        when it cannot be told); the sqlite store must not be on NFS/Lustre/BeeGFS (a warning)."""
        from orchestrator.backends import sharedfs
        if self.profile is not None and not self.profile.shared_fs_check:
            return
        problem = sharedfs.job_folder_problem(spec.workdir, self.node_hosts())
        if problem is not None and problem[0] == "error":
            raise InputError(problem[1], spec.source, "workdir")
        uri = os.environ.get("MLFLOW_TRACKING_URI") or spec.tracking.uri or default_uri()
        for message in ([problem[1]] if problem else []) + [m for m in [sharedfs.sqlite_problem(uri)] if m]:
            print(f"orch: warning: {message}", file=sys.stderr)

    def packs(self, run_dirs: list[RunDir]) -> list[list[RunDir]]:
        """The runs of each job: ``runs_per_job`` at a time (1: one job per run)."""
        n = self.resources.runs_per_job if self.resources is not None else 1
        return [run_dirs[i:i + n] for i in range(0, len(run_dirs), n)]

    def check_job_count(self, jobs: int) -> None:
        """Refuse a submission that would pass the profile's ``max_jobs`` (QOS MaxSubmitJobs), counting the
        jobs this user already has queued, before anything is queued."""
        if self.profile is None or self.profile.max_jobs is None:
            return
        proc = self._run(["squeue", "--me", "-h", "-r", "-o", "%i"], check=False)
        queued = len(proc.stdout.split()) if proc.returncode == 0 else 0
        self.profile.check_job_count(jobs, queued, self.source)

    def check_submission(self, n_runs: int) -> None:
        """Everything about a submission of ``n_runs`` runs that can be refused before MLflow runs and run
        directories are made: the job count against ``max_jobs``. (``submit`` checks it again, exactly.)"""
        per_job = self.resources.runs_per_job if self.resources is not None else 1
        self.check_job_count(math.ceil(n_runs / per_job))

    def job_script(self, n_jobs: int, folder: Path | None = None) -> str:
        """The sbatch script one submission of ``n_jobs`` array tasks sends (``--dry-run``)."""
        folder = folder or Path("<job folder>/.slurm/<token>")
        executor = self._executor(folder, f"{JOB_NAME_PREFIX}<token>")
        executor.parameters["map_count"] = n_jobs  # what submitit sets for map_array
        try:
            return executor._make_submission_file_text("<python -u -m submitit.core._submit ...>", "<token>")
        finally:
            executor.parameters.pop("map_count", None)

    def array_previews(self, n_runs: int) -> list[tuple[str, str]]:
        """``--dry-run``: for each array the submission would queue, its sbatch script and what
        ``sbatch --test-only`` answers for it. Nothing is created or queued."""
        jobs = math.ceil(n_runs / (self.resources.runs_per_job if self.resources is not None else 1))
        size = self.max_array_size()
        out = []
        for start in range(0, jobs, size):
            text = self.job_script(min(size, jobs - start))
            with tempfile.TemporaryDirectory(prefix="orch-sbatch-") as tmp:
                script = Path(tmp) / "preview.sh"
                script.write_text(text.replace("<job folder>/.slurm/<token>", tmp).replace("<token>", "preview"))
                proc = self._run(["sbatch", "--test-only", str(script)], check=False)
            answer = (proc.stderr or proc.stdout).strip().replace("sbatch: ", "")
            verdict = "no answer (no controller reachable here)" if UNREACHABLE in answer else "refused"
            out.append((text, answer if proc.returncode == 0 else f"{verdict}: {answer}"))
        return out

    def max_array_size(self) -> int:
        if self.profile is not None and self.profile.max_array_size:
            return self.profile.max_array_size
        proc = self._run(["scontrol", "show", "config"], check=False)
        match = re.search(r"^MaxArraySize\s*=\s*(\d+)", proc.stdout, re.M)
        return int(match.group(1)) if match else DEFAULT_MAX_ARRAY_SIZE

    def submit(self, run_dirs: list[RunDir]) -> list[str]:
        if not run_dirs:
            return []
        packs = self.packs(run_dirs)
        self.check_job_count(len(packs))
        size = self.max_array_size()  # array indices go 0 .. MaxArraySize-1
        ids: list[str] = []
        for start in range(0, len(packs), size):
            ids += self._submit_array(packs[start:start + size])
        return ids

    def _node_hint(self, message: str) -> str:
        """Slurm's "Requested node configuration is not available" names no number: say what one job asked
        for (runs_per_job runs packed together) and where to lower it."""
        if "node configuration is not available" not in message:
            return ""
        job = job_resources(self.resources)
        packed = (f" = runs_per_job {self.resources.runs_per_job} x {self.resources.cpus} cpus"
                  if self.resources.runs_per_job > 1 else "")
        return (f"; one job asked for {job['cpus']} cpus{packed}, {job['mem_gb']:g} GB and {job['gpus']} GPUs on one node "
                f"of partition {self.profile.partition or '(default)'}: no node there has that much. Lower "
                f"resources.runs_per_job or resources.cpus, or set limits: in {self.profile._file or self.profile.name} "
                "so that orch refuses it before sbatch (`sinfo -o '%P %c %m %G'` shows what the nodes offer)")

    def _submit_array(self, packs: list[list[RunDir]]) -> list[str]:
        token = uuid.uuid4().hex[:12]
        folder = packs[0][0].path.parent / ".slurm" / token  # fresh per submission: old results never read back
        submitter = f"{socket.gethostname()}:{os.getpid()}"
        for index, pack in enumerate(packs):  # the token first, so a crash after sbatch is recoverable
            for run_dir in pack:
                write_record(run_dir, {"scheduler": "slurm", "token": token, "index": index, "submitter": submitter,
                                       "submitted_at": time.time(), "folder": str(folder),
                                       "pack": [str(r.path) for r in pack]})
        executor = self._executor(folder, f"{JOB_NAME_PREFIX}{token}")
        _fault("before-sbatch")
        self.calls["sbatch"] += 1
        packed = any(len(pack) > 1 for pack in packs)
        function: Any = (SlurmPack(self.profile.max_requeues, self.resources.gpus / self.resources.runs_per_gpu)
                         if packed else SlurmRun(self.profile.max_requeues))
        args = [[str(r.path) for r in pack] if packed else str(pack[0].path) for pack in packs]
        try:
            jobs = executor.map_array(function, args)
        except Exception as err:  # noqa: BLE001 - sbatch's own message is what the user needs
            raise SchedulerError(f"sbatch failed: {err}{self._node_hint(str(err))}") from None
        _fault("after-sbatch")
        ids = []
        for pack, job in zip(packs, jobs):
            for run_dir in pack:
                write_record(run_dir, {**read_record(run_dir), "job_id": job.job_id,
                                       "logs": [str(job.paths.stdout), str(job.paths.stderr)]})
                ids.append(job.job_id)
        return ids

    # -- state ---------------------------------------------------------------------------------------
    def poll(self, jobs: list[Job]) -> list[JobState]:
        ids = self._job_ids(jobs)
        wanted = {i for i in ids if i}
        if wanted - self._cache.keys() or time.monotonic() - self._cache_time > self.min_query_interval_s:
            self._cache = self._query(wanted)
            self._cache_time = time.monotonic()
        return [self._state(job, job_id) for job, job_id in zip(jobs, ids)]

    def _state(self, job: Job, job_id: str | None) -> JobState:
        if job_id is None:
            record = read_record(job.run_dir)
            if record and _submitter_alive(record.get("submitter", "")):
                return JobState(PENDING, "being submitted")
            return JobState(LOST, "never queued: the orchestrator stopped before sbatch accepted the job")
        found = self._cache.get(job_id)
        if found is None:
            how = "sacct and squeue" if self.sacct_ok else "squeue (accounting unavailable)"
            return JobState(LOST, f"Slurm job {job_id}: no trace in {how}; it ended without recording an end")
        return to_job_state(*found)

    def _job_ids(self, jobs: list[Job]) -> list[str | None]:
        """Job ids from the jobs, else from scheduler.json, else (orch died after sbatch) by job name."""
        ids: list[str | None] = []
        orphans: dict[int, dict[str, Any]] = {}
        for n, job in enumerate(jobs):
            job_id = job.job_id or None
            if not job_id:
                record = read_record(job.run_dir)
                job_id = record.get("job_id")
                if not job_id and record.get("token"):
                    orphans[n] = record
            ids.append(job_id)
        if orphans:
            found = self._find_by_name({r["token"] for r in orphans.values()})
            for n, record in orphans.items():
                base = found.get(record["token"])
                if base is not None:
                    ids[n] = f"{base}_{record['index']}"
                    write_record(jobs[n].run_dir, {**record, "job_id": ids[n], "recovered": True})
        return ids

    def _find_by_name(self, tokens: set[str]) -> dict[str, str]:
        """Array job ids of submissions whose orchestrator died before writing them down (one call)."""
        names = ",".join(f"{JOB_NAME_PREFIX}{t}" for t in sorted(tokens))
        out: dict[str, str] = {}
        proc = self._run(["squeue", "--me", "-h", "-t", "all", "--name", names, "-o", "%F|%j"], check=False)
        lines = proc.stdout.splitlines() if proc.returncode == 0 else []
        if not lines and self.sacct_ok is not False:
            proc = self._run(["sacct", "-X", "-n", "-P", "-S", "now-7days", "--name", names, "-o", "JobIDRaw,JobName,JobID"],
                             check=False)
            if proc.returncode == 0:
                lines = []
                for line in proc.stdout.splitlines():
                    raw, name, job_id = line.split("|")
                    lines.append(f"{job_id.split('_')[0]}|{name}")
        for line in lines:
            base, _, name = line.partition("|")
            out[name.removeprefix(JOB_NAME_PREFIX)] = base.strip()
        return out

    def _query(self, ids: set[str]) -> dict[str, tuple[str, str]]:
        """State and reason of each job: one sacct call; squeue for the jobs sacct does not know (just
        queued, not yet in the database) or for all of them when accounting is disabled or restricted."""
        if not ids:
            return {}
        states: dict[str, tuple[str, str]] = {}
        if self.sacct_ok is not False:
            arrays = sorted({i.split("_")[0] for i in ids}, key=int)
            proc = self._run(["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Reason", "-j", ",".join(arrays)],
                             check=False)
            if proc.returncode == 0:
                self.sacct_ok = True
                for line in proc.stdout.splitlines():
                    parts = line.split("|")
                    if len(parts) < 4:
                        continue
                    job_field, state, exit_code, reason = parts[:4]
                    ended = state.split()[0] in _ENDED if state else False
                    detail = f"exit code {exit_code}" if ended and exit_code not in ("", "0:0") else reason
                    for job_id in expand_job_ids(job_field):
                        states[job_id] = (state, detail)
            else:
                self.sacct_ok = False
                self.last_error = proc.stderr.strip()
        if ids - states.keys():
            proc = self._run(["squeue", "--me", "-h", "-t", "all", "-r", "-o", "%i|%T|%r"], check=False)
            for line in proc.stdout.splitlines() if proc.returncode == 0 else []:
                job_id, _, rest = line.partition("|")
                state, _, reason = rest.partition("|")
                if job_id in ids and job_id not in states:
                    states[job_id] = (state, reason)
        return states

    # -- cancel --------------------------------------------------------------------------------------
    def cancel(self, jobs: list[Job]) -> None:
        ids = self._job_ids(jobs)
        asked = {str(job.run_dir.path) for job in jobs}
        live: list[str] = []
        for job, job_id in zip(jobs, ids):
            # Marked before scancel: a worker still starting up (submitit ignores SIGTERM until our worker
            # installs its handler) sees the mark itself and journals KILLED instead of running on
            # until Slurm's KillWait SIGKILL. A run of a pack with other runs is stopped by its pack alone.
            job.run_dir.mark_cancelled("cancelled by orch cancel")
            if job_id and job_id not in live and not set(read_record(job.run_dir).get("pack", [])) - asked:
                live.append(job_id)
        if not any(ids):
            return
        if live:
            self._run(["scancel", *live], check=False)
        # scancel only asks: give running workers the moment they need to journal KILLED themselves
        started = [job for job, job_id in zip(jobs, ids) if job_id and running_now(job.run_dir.journal)]
        deadline = time.monotonic() + CANCEL_WAIT_S
        while started and time.monotonic() < deadline:
            started = [job for job in started if not ended_last(job.run_dir.journal)]
            time.sleep(0.2)
        self._cache.clear()


UNREACHABLE = "Unable to contact slurm controller"


def _controller_answers() -> bool:
    """Whether a Slurm controller answers here (a dry-run on a laptop still shows the job scripts)."""
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def preview_text(spec: Spec, n_runs: int, cluster: str | None = None) -> str:
    """``orch submit --dry-run`` on Slurm: each array's sbatch script and ``sbatch --test-only``'s answer.
    Builds the backend as a submission would (the same refusals), creates and queues nothing."""
    backend = SlurmBackend.from_spec(spec, cluster=cluster, check=_controller_answers())
    if n_runs == 0:
        return "nothing to queue"
    parts = []
    arrays = backend.array_previews(n_runs)
    per_job = spec.resources.runs_per_job
    for i, (script, answer) in enumerate(arrays, 1):
        head = f"# array {i} of {len(arrays)}" + (f" ({per_job} runs per job)" if per_job > 1 else "")
        parts.append(f"{head}\n{script.rstrip()}\n# sbatch --test-only: {answer}")
    return "\n\n".join(parts)


def _fault(point: str) -> None:
    """Crash here when ``ORCH_FAULT`` names this point: the tests kill orch exactly between sbatch and
    recording the job ids, which no timing can do reliably."""
    if os.environ.get("ORCH_FAULT") == point:
        os._exit(70)


def _submitter_alive(submitter: str) -> bool:
    host, _, pid = submitter.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return pid_alive(int(pid)) and int(pid) != os.getpid()  # this very process: its submission failed, nothing is coming


__all__ = ["SlurmBackend", "SlurmRun", "expand_job_ids", "to_job_state", "SchedulerError"]
