"""Slurm backend, through submitit.

- ``submit`` queues the runs of one submission as job arrays (split at the cluster's MaxArraySize) and
  returns at once; each array task runs ``worker.execute(run_dir)`` and writes only its run directory
  (the job folder on the shared filesystem), so compute nodes need no network.
- ``poll`` asks the scheduler ONCE for all the jobs it is given (sacct; squeue for what sacct does not
  know, or for everything when accounting is disabled or restricted).
- Crash safety (Dora's idea): before sbatch, every run directory gets ``scheduler.json`` with a token
  that is also the Slurm job name; after sbatch, the job id is added. A run whose orchestrator died in
  between is found again by that name, so it is neither lost nor queued twice.
- Preemption and time limits (``slurm_job.py``, what runs in the job): a requeue journals ``requeue``, not
  KILLED, and the next attempt resumes from the workload's checkpoint in the same MLflow run. Jobs are
  submitted ``--requeue`` (profile ``requeue``), so this holds where slurm.conf says ``JobRequeue=0``.
- Packing (``resources.runs_per_job``): one array task runs several runs at once (``SlurmPack``, through
  ``job/pack.py``), each with its own journal, checkpoint, requeue and MLflow run and the task's job id.
- A multi-task run (``resources.nodes`` x ``tasks_per_node``): one array task of that many Slurm tasks, each a
  rank (``SlurmDistRun``, job/dist.py), one run.
Job states, ``scheduler.json`` and sacct's accounting: ``slurm_states.py``; ``--dry-run``'s scripts:
``slurm_preview.py``. Over 400 lines, one concept: the ``SlurmBackend`` class, every conversation orch has
with the scheduler (sbatch, sacct, squeue, scancel) and the cache that keeps them to one call per poll."""

from __future__ import annotations

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

from orchestrator.backends.base import LOST, PENDING, Backend, Job, JobState
from orchestrator.backends.slurm_job import SlurmDistRun, SlurmPack, SlurmRun
from orchestrator.backends.slurm_profile import apply_profile, job_resources, load_profile
from orchestrator.backends.slurm_states import (
    ENDED_STATES,
    expand_job_ids,
    parse_accounting,
    read_record,
    to_job_state,
    write_record,
)
from orchestrator.errors import InputError
from orchestrator.job.journal import ended_last, running_now
from orchestrator.job.liveness import pid_alive
from orchestrator.job.rundir import RunDir
from orchestrator.spec.tracking_uri import default_uri

if TYPE_CHECKING:
    from orchestrator.spec.spec import Spec

JOB_NAME_PREFIX = "orch-"
QUERY_CACHE_S = 2.0  # follow() polls often; the scheduler is asked at most this often
CANCEL_WAIT_S = 15.0  # how long cancel waits for running jobs to journal their end
DEFAULT_MAX_ARRAY_SIZE = 1001

UNREACHABLE = "Unable to contact slurm controller"


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
        self.sacct_ok: bool | None = None  # None: not tried yet; False: accounting disabled/unreachable
        self.last_error: str | None = None
        self._cache: dict[str, tuple[str, str]] = {}
        self._cache_time = 0.0

    @classmethod
    def resolve_spec(cls, spec: Spec, set_paths: list[str]) -> Spec:
        """The profile may put the run directories on the shared filesystem (its ``job_folder``)."""
        return apply_profile(spec)

    @classmethod
    def preview(cls, spec: Spec, n_runs: int) -> str | None:
        from orchestrator.backends.slurm_preview import preview_text

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
        backend = cls(
            load_profile(cluster or spec.cluster, f"{spec.source}: cluster", spec.slurm, spec.source), spec.resources
        )
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
            raise SchedulerError(
                "this SlurmBackend was made without a cluster profile: it can poll and cancel, not submit"
            )
        return self.profile.slurm_parameters(self.resources)

    def _executor(self, folder: Path, job_name: str) -> submitit.SlurmExecutor:
        try:
            executor = submitit.SlurmExecutor(folder=folder, max_num_timeout=self.profile.max_requeues)
        except RuntimeError as err:  # submitit's "Could not detect srun": not a Slurm host
            raise SchedulerError(f"{err} ('srun' is not on PATH: is this a Slurm login node?)") from None
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
            message = (
                " ".join(
                    line.removeprefix("sbatch: error: ").strip() for line in proc.stderr.splitlines() if "error" in line
                )
                or proc.stderr.strip()
            )
            if UNREACHABLE in message:  # not a refusal of the request: nobody answered it
                raise InputError(
                    f"Slurm's controller does not answer ({message}); check `scontrol ping` on this "
                    f"host (cluster profile '{self.profile.name}')",
                    source,
                    "backend",
                )
            raise InputError(
                f"Slurm refuses this request with cluster profile '{self.profile.name}': {message} "
                f"(asked: {self._request_summary()}){self._node_hint(message)}",
                source,
                "resources.runs_per_job" if self.resources.runs_per_job > 1 else "resources",
            )

    def _request_summary(self) -> str:
        p = {**self.parameters().get("additional_parameters", {}), **self.parameters()}
        keys = (
            "partition",
            "account",
            "qos",
            "constraint",
            "gres",
            "gpus",
            "gpus_per_node",
            "exclusive",
            "cpus_per_task",
            "mem",
            "time",
        )
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
        return [run_dirs[i : i + n] for i in range(0, len(run_dirs), n)]

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
            ids += self._submit_array(packs[start : start + size])
        return ids

    def _node_hint(self, message: str) -> str:
        """Slurm's "Requested node configuration is not available" names no number: say what one job asked
        for (runs_per_job runs packed together) and where to lower it."""
        if "node configuration is not available" not in message:
            return ""
        job = job_resources(self.resources)
        packed = (
            f" = runs_per_job {self.resources.runs_per_job} x {self.resources.cpus} cpus"
            if self.resources.runs_per_job > 1
            else ""
        )
        return (
            f"; one job asked for {job['cpus']} cpus{packed}, {job['mem_gb']:g} GB and {job['gpus']} GPUs on one node "
            f"of partition {self.profile.partition or '(default)'}: no node there has that much. Lower "
            f"resources.runs_per_job or resources.cpus, or set limits: in {self.profile._file or self.profile.name} "
            "so that orch refuses it before sbatch (`sinfo -o '%P %c %m %G'` shows what the nodes offer)"
        )

    def _submit_array(self, packs: list[list[RunDir]]) -> list[str]:
        token = uuid.uuid4().hex[:12]
        folder = packs[0][0].path.parent / ".slurm" / token  # fresh per submission: old results never read back
        submitter = f"{socket.gethostname()}:{os.getpid()}"
        for index, pack in enumerate(packs):  # the token first, so a crash after sbatch is recoverable
            for run_dir in pack:
                write_record(
                    run_dir,
                    {
                        "scheduler": "slurm",
                        "token": token,
                        "index": index,
                        "submitter": submitter,
                        "submitted_at": time.time(),
                        "folder": str(folder),
                        "pack": [str(r.path) for r in pack],
                    },
                )
        executor = self._executor(folder, f"{JOB_NAME_PREFIX}{token}")
        _fault("before-sbatch")
        self.calls["sbatch"] += 1
        packed = any(len(pack) > 1 for pack in packs)
        function: Any = (
            SlurmPack(self.profile.max_requeues, self.resources.gpus / self.resources.runs_per_gpu)
            if packed
            else SlurmDistRun(self.profile.max_requeues)
            if self.resources.world_size > 1
            else SlurmRun(self.profile.max_requeues)
        )
        args = [[str(r.path) for r in pack] if packed else str(pack[0].path) for pack in packs]
        try:
            jobs = executor.map_array(function, args)
        except Exception as err:
            raise SchedulerError(f"sbatch failed: {err}{self._node_hint(str(err))}") from None
        _fault("after-sbatch")
        ids = []
        for pack, job in zip(packs, jobs, strict=False):
            for run_dir in pack:
                write_record(
                    run_dir,
                    {
                        **read_record(run_dir),
                        "job_id": job.job_id,
                        "logs": [str(job.paths.stdout), str(job.paths.stderr)],
                    },
                )
                ids.append(job.job_id)
        return ids

    # -- state ---------------------------------------------------------------------------------------
    def poll(self, jobs: list[Job]) -> list[JobState]:
        ids = self._job_ids(jobs)
        wanted = {i for i in ids if i}
        if wanted - self._cache.keys() or time.monotonic() - self._cache_time > self.min_query_interval_s:
            self._cache = self._query(wanted)
            self._cache_time = time.monotonic()
        return [self._state(job, job_id) for job, job_id in zip(jobs, ids, strict=False)]

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
            proc = self._run(
                ["sacct", "-X", "-n", "-P", "-S", "now-7days", "--name", names, "-o", "JobIDRaw,JobName,JobID"],
                check=False,
            )
            if proc.returncode == 0:
                lines = []
                for line in proc.stdout.splitlines():
                    _raw, name, job_id = line.split("|")
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
            proc = self._run(
                ["sacct", "-X", "-n", "-P", "-o", "JobID,State,ExitCode,Reason", "-j", ",".join(arrays)], check=False
            )
            if proc.returncode == 0:
                self.sacct_ok = True
                for line in proc.stdout.splitlines():
                    parts = line.split("|")
                    if len(parts) < 4:
                        continue
                    job_field, state, exit_code, reason = parts[:4]
                    ended = state.split()[0] in ENDED_STATES if state else False
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

    def accounting(self, jobs: list[Job]) -> dict[str, dict[str, str]]:
        """One ``sacct`` call for the ended jobs: Elapsed, State, ExitCode, NodeList, AllocTRES of each job
        and the largest MaxRSS of its steps; only the jobs sacct lists as ended (its database lags a job's end
        by a few seconds: the next call gets the rest). Sites that restrict sacct to one's own jobs: ours."""
        ids = sorted({j.job_id for j in jobs if j.job_id})
        if not ids or self.sacct_ok is False:
            return {}
        fields = "JobID,Elapsed,State,ExitCode,NodeList,AllocTRES,MaxRSS"
        proc = self._run(["sacct", "-n", "-P", "-o", fields, "-j", ",".join(ids)], check=False)
        return parse_accounting(proc.stdout, set(ids)) if proc.returncode == 0 else {}

    # -- cancel --------------------------------------------------------------------------------------
    def cancel(self, jobs: list[Job]) -> None:
        ids = self._job_ids(jobs)
        asked = {str(job.run_dir.path) for job in jobs}
        live: list[str] = []
        for job, job_id in zip(jobs, ids, strict=False):
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
        started = [job for job, job_id in zip(jobs, ids, strict=False) if job_id and running_now(job.run_dir.journal)]
        deadline = time.monotonic() + CANCEL_WAIT_S
        while started and time.monotonic() < deadline:
            started = [job for job in started if not ended_last(job.run_dir.journal)]
            time.sleep(0.2)
        self._cache.clear()


def _fault(point: str) -> None:
    """Crash here when ``ORCH_FAULT`` names this point: the tests kill orch exactly between sbatch and
    recording the job ids, which no timing can do reliably."""
    if os.environ.get("ORCH_FAULT") == point:
        os._exit(70)


def _submitter_alive(submitter: str) -> bool:
    host, _, pid = submitter.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    return (
        pid_alive(int(pid)) and int(pid) != os.getpid()
    )  # this very process: its submission failed, nothing is coming
