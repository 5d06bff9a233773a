"""Ray backend: each run is a Ray task that calls ``orchestrator.job.worker.execute(run_dir)`` (or, packed,
``resources.runs_per_job`` runs in one task through job/pack.py).

The task only writes its run directory (journal, checkpoint, logs), exactly like a local or Slurm job, so
the orchestrator ingests it into MLflow the same way. A task asks for the run's ``cpus``, ``gpus`` (a fraction
shares a GPU) and ``mem_gb``; Ray runs it again when its worker or node dies (``max_retries`` in
cluster/ray.yaml), and the run resumes from its checkpoint; ``time_min`` is enforced in the task (Ray has no
time limit of its own).

Two ways to own the tasks. A private local Ray (no address) lives in the ``orch submit`` process: it follows
its tasks to the end (``RayBackend``: poll = ``ray.wait``, cancel = ``ray.cancel``). On a Ray cluster, a
detached driver (``backends/ray_driver.py``, its own session, no terminal) owns them (``DetachedRayBackend``):
``orch submit`` returns once they are submitted, and ``orch status`` / ``cancel`` / ``logs`` work from any
shell that sees the job folder, through the driver's heartbeat file and the runs' cancel markers.

Ray's defaults that bite are set here, once, before ``ray.init`` (see docs/ray.md): usage stats off, an
explicit token auth mode with a token file orch creates if missing, a known temp dir, no dashboard, worker
logs kept out of the driver's terminal (they are in each run directory): ``ray_connect.py``. What runs in a
task: ``ray_task.py``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import DONE, LOST, PENDING, RUNNING, Backend, Job, JobState
from orchestrator.backends.ray_connect import connect, require, resolve_address
from orchestrator.backends.ray_settings import RaySettings, load_ray_settings
from orchestrator.backends.ray_task import run_dist_in_task, run_in_task, run_pack_in_task
from orchestrator.errors import InputError
from orchestrator.job.journal import ended_last, last_event, running_now
from orchestrator.job.liveness import pid_alive, terminate_workers
from orchestrator.job.rundir import RunDir, atomic_write
from orchestrator.spec.tracking_uri import default_uri
from orchestrator.vocabulary import Event

if TYPE_CHECKING:
    from orchestrator.spec.spec import Spec

CANCEL_GRACE_S = 10.0


def task_options(spec_resources: Any, n_runs: int, max_retries: int) -> dict[str, Any]:
    """What one task asks Ray for: ``n_runs`` runs' cores, memory and GPUs (each run gets
    gpus / runs_per_gpu of a GPU; Ray accepts fractions)."""
    share = spec_resources.gpus / spec_resources.runs_per_gpu
    options: dict[str, Any] = {
        "num_cpus": float(spec_resources.cpus * n_runs),
        "num_gpus": float(share * n_runs),
        "max_retries": max_retries,
        "retry_exceptions": False,
    }
    if spec_resources.mem_gb:
        options["memory"] = int(spec_resources.mem_gb * n_runs * 2**30)
    return options


def rank_bundle(spec_resources: Any) -> dict[str, float]:
    """One rank's bundle of a multi-task run's placement group: its cores, GPUs and memory."""
    bundle = {"CPU": float(spec_resources.cpus)}
    if spec_resources.task_gpus:
        bundle["GPU"] = float(spec_resources.task_gpus)
    if spec_resources.mem_gb:
        bundle["memory"] = float(int(spec_resources.mem_gb * 2**30))
    return bundle


def packs_of(run_dirs: list[RunDir], per_job: int) -> list[list[RunDir]]:
    return [run_dirs[i : i + per_job] for i in range(0, len(run_dirs), per_job)]


@dataclass
class _Task:
    ref: Any  # a ray.ObjectRef
    run_dir: RunDir


class RayBackend(Backend):
    name = "ray"
    blocking = True  # a Ray task is owned by the driver process and dies with it

    def __init__(
        self,
        address: str | None = None,
        mem_gb: float | None = None,
        settings: RaySettings | None = None,
        resources: Any = None,
        time_limit_s: int | None = None,
    ):
        self.address, self.settings = address, settings
        self.mem_gb = mem_gb
        self.resources = resources  # the spec's Resources (None: poll and cancel only)
        self.time_limit_s = time_limit_s
        self.host = socket.gethostname()
        self._tasks: dict[str, _Task] = {}
        self._remote: Any = None  # ray.remote(run_in_task), made once connected
        self._remote_pack: Any = None
        self._remote_dist: Any = None

    @classmethod
    def from_spec(cls, spec: Spec | None, ray_address: str | None = None, **_: Any) -> RayBackend:
        """``ray_address``: --ray-address; else RAY_ADDRESS, cluster/ray.yaml, else a local Ray. On a cluster
        (an address) the runs go to a detached driver unless ``detach: false`` in cluster/ray.yaml."""
        settings = load_ray_settings()
        detached = resolve_address(ray_address, settings) is not None and settings.detach
        kind: type[RayBackend] = DetachedRayBackend if detached else cls
        if spec is None:
            return kind(ray_address, settings=settings)
        backend = kind(
            ray_address,
            mem_gb=spec.resources.mem_gb,
            settings=settings,
            resources=spec.resources,
            time_limit_s=spec.resources.time_min * 60,
        )
        # a run no node can hold would wait forever: refuse it before anything is created
        if spec.resources.world_size > 1:
            backend.require_group(spec.resources, f"{spec.source}: resources")
            if detached:
                backend.check_filesystems(spec)
            return backend
        options = task_options(spec.resources, spec.resources.runs_per_job, 0)
        backend.require(
            backend.request(
                options["num_cpus"], options["num_gpus"], spec.resources.mem_gb * spec.resources.runs_per_job
            ),
            f"{spec.source}: resources",
        )
        if detached:
            backend.check_filesystems(spec)
        return backend

    def check_filesystems(self, spec: Spec) -> None:
        """As for Slurm (backends/sharedfs.py): the run directories must be visible from every Ray node (node-
        local storage refused when some node is another host), and a sqlite store on NFS is warned about."""
        from orchestrator.backends import sharedfs

        nodes = {str(n.get("NodeManagerAddress", "")) for n in self.ray.nodes() if n.get("Alive")} - {""}
        problem = sharedfs.job_folder_problem(spec.workdir, nodes)
        if problem is not None and problem[0] == "error":
            raise InputError(problem[1], spec.source, "workdir")
        uri = os.environ.get("MLFLOW_TRACKING_URI") or spec.tracking.uri or default_uri()
        for message in ([problem[1]] if problem else []) + [m for m in [sharedfs.sqlite_problem(uri)] if m]:
            print(f"orch: warning: {message}", file=sys.stderr)

    @property
    def ray(self):
        """Connected on first use: ``orch status`` judges jobs of earlier processes without starting Ray."""
        ray = connect(self.address, self.settings)
        if self._remote is None:
            self._remote = ray.remote(run_in_task)
            self._remote_pack = ray.remote(run_pack_in_task)
            self._remote_dist = ray.remote(run_dist_in_task)
        return ray

    def request(self, cpus: float, gpus: float, mem_gb: float | None = None) -> dict[str, float]:
        needs = {"CPU": float(cpus), "GPU": float(gpus)}
        if mem_gb or self.mem_gb:
            needs["memory"] = (mem_gb or self.mem_gb or 0) * 2**30
        return needs

    def require(self, needs: dict[str, float], source: str) -> None:
        require(self.ray, needs, source)

    def require_group(self, resources: Any, source: str) -> None:
        """A multi-task run's placement group: on one node, that node holds every bundle; over several, each
        bundle fits a node and the cluster holds them all (Ray would wait forever for a group it cannot place)."""
        bundle = rank_bundle(resources)
        per_node = resources.layout if resources.nodes == 1 else 1
        self.require({k: v * per_node for k, v in bundle.items()}, source)
        alive = [n["Resources"] for n in self.ray.nodes() if n.get("Alive")]
        for key, value in bundle.items():
            total = sum(node.get(key, 0.0) for node in alive)
            if value * resources.world_size > total:
                raise InputError(
                    f"{resources.world_size} ranks x {key}={value:g} but the Ray cluster has {key}={total:g} in all: "
                    "lower resources.nodes/tasks_per_node or join a bigger cluster",
                    source,
                )

    @property
    def max_retries(self) -> int:
        return (self.settings or load_ray_settings()).max_retries

    def _resources(self) -> Any:
        if self.resources is None:
            from orchestrator.spec.spec import Resources

            return Resources(mem_gb=self.mem_gb or 4.0)
        return self.resources

    def submit_tasks(self, run_dirs: list[RunDir]) -> list[tuple[list[RunDir], Any]]:
        """One task per run, or per ``runs_per_job`` runs; (its runs, its object ref) each."""
        self.ray  # noqa: B018 - connect before the first task
        resources = self._resources()
        out = []
        for pack in packs_of(run_dirs, resources.runs_per_job):
            options = task_options(resources, len(pack), self.max_retries)
            if resources.world_size > 1:  # a coordinator holding no CPU; its ranks hold the placement group
                coordinator = self._remote_dist.options(
                    num_cpus=0, max_retries=self.max_retries, retry_exceptions=False
                )
                ref = coordinator.remote(
                    str(pack[0].path), resources.nodes, resources.layout, rank_bundle(resources), self.time_limit_s
                )
            elif len(pack) == 1:
                ref = self._remote.options(**options).remote(str(pack[0].path), self.time_limit_s)
            else:
                share = resources.gpus / resources.runs_per_gpu
                ref = self._remote_pack.options(**options).remote([str(r.path) for r in pack], share, self.time_limit_s)
            out.append((pack, ref))
        return out

    def submit(self, run_dirs: list[RunDir]) -> list[str]:
        ids = []
        for pack, ref in self.submit_tasks(run_dirs):
            for run_dir in pack:
                self._tasks[str(run_dir.path)] = _Task(ref, run_dir)
                ids.append(f"ray:{self.host}:{os.getpid()}:{ref.task_id().hex()}")
        return ids

    def poll(self, jobs: list[Job]) -> list[JobState]:
        if any(j.job_id.startswith(DETACHED_PREFIX) for j in jobs):
            detached = [n for n, j in enumerate(jobs) if j.job_id.startswith(DETACHED_PREFIX)]
            states: list[JobState | None] = [None] * len(jobs)
            for n in detached:
                states[n] = detached_state(jobs[n])
            rest = [n for n in range(len(jobs)) if n not in set(detached)]
            for n, state in zip(rest, self._poll_owned([jobs[n] for n in rest]) if rest else [], strict=False):
                states[n] = state
            return [s for s in states if s is not None]
        return self._poll_owned(jobs)

    def _poll_owned(self, jobs: list[Job]) -> list[JobState]:
        mine = [self._tasks[str(j.run_dir.path)] for j in jobs if str(j.run_dir.path) in self._tasks]
        refs = list({t.ref.hex(): t.ref for t in mine}.values())  # the runs of a pack share one task
        ready: set[str] = set()
        if refs:
            done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0, fetch_local=False)
            ready = {r.hex() for r in done}
        states = []
        for job in jobs:
            task = self._tasks.get(str(job.run_dir.path))
            if task is None:
                states.append(self._foreign(job))
            elif task.ref.hex() in ready:
                states.append(JobState(DONE, self._failure(task.ref)))
            else:
                started = last_event(job.run_dir.journal, Event.START) is not None
                states.append(JobState(RUNNING if started else PENDING))
        return states

    def _failure(self, ref) -> str | None:
        """Why a finished task ended, when Ray knows it (worker crash, OOM kill, cancel)."""
        try:
            self.ray.get(ref, timeout=0)
            return None
        except Exception as err:
            return f"ray task ended: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"

    def _foreign(self, job: Job) -> JobState:
        """A task of an earlier orch process: its owner is gone, so the task is gone too (Ray kills the
        tasks of a dead driver) unless the journal shows it ended or its process is still alive here."""
        if last_event(job.run_dir.journal, Event.END) is not None:
            return JobState(DONE)
        start = last_event(job.run_dir.journal, Event.START)
        if start and start.get("host") == self.host and pid_alive(int(start["pid"])):
            return JobState(RUNNING)
        return JobState(LOST, "the orch process that owned this Ray task ended before the run did")

    def cancel(self, jobs: list[Job]) -> None:
        detached = [j for j in jobs if j.job_id.startswith(DETACHED_PREFIX)]
        if detached:
            cancel_detached(detached)
            jobs = [j for j in jobs if not j.job_id.startswith(DETACHED_PREFIX)]
        tasks = list(
            {
                id(t.ref): t
                for t in (self._tasks[str(j.run_dir.path)] for j in jobs if str(j.run_dir.path) in self._tasks)
            }.values()
        )  # a pack: one task
        for task in tasks:
            self.ray.cancel(task.ref)  # KeyboardInterrupt in the task: the worker journals KILLED
        deadline = time.monotonic() + CANCEL_GRACE_S
        pending = [t.ref for t in tasks]
        while pending and time.monotonic() < deadline:
            _, pending = self.ray.wait(pending, num_returns=len(pending), timeout=0.2, fetch_local=False)
        for ref in pending:
            self.ray.cancel(ref, force=True)
        foreign = []  # tasks of another orch process: stop the worker if it runs on this host
        for job in jobs:
            if str(job.run_dir.path) not in self._tasks:
                start = last_event(job.run_dir.journal, Event.START)
                if start and start.get("host") == self.host and self._foreign(job).state == RUNNING:
                    foreign.append(job.run_dir.journal)
        terminate_workers(foreign, CANCEL_GRACE_S)


# -- runs owned by a detached driver (ray_driver.py) ----------------------------------------------------
DETACHED_PREFIX = "raydrv:"
DRIVER_FILE = "driver.json"  # the driver's heartbeat: pid, host, t, ended, failures
HEARTBEAT_S = 2.0  # the driver rewrites driver.json this often
STALE_S = 30.0  # a heartbeat older than this: the driver is gone
DRIVER_START_S = 180.0  # how long submit waits for the driver to connect and submit


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def driver_folder(run_dir: RunDir) -> Path | None:
    folder = read_json(run_dir.scheduler_record).get("folder")
    return Path(folder) if folder else None


def detached_state(job: Job) -> JobState:
    """From any shell that sees the job folder: the journal says how a run ended; while it has not, the
    driver's heartbeat says whether anything still owns it."""
    journal = job.run_dir.journal
    if ended_last(journal):
        return JobState(DONE)
    folder = driver_folder(job.run_dir)
    beat = read_json(folder / DRIVER_FILE) if folder else {}
    failure = beat.get("failures", {}).get(str(job.run_dir.path))
    if failure:
        return JobState(DONE, failure)
    if not beat:
        return JobState(LOST, "no detached Ray driver ever reported for this run")
    if beat.get("ended"):
        return JobState(DONE, "the detached Ray driver ended before the run journaled its end")
    if time.time() - float(beat.get("t", 0)) > STALE_S:
        return JobState(
            DONE,
            f"the detached Ray driver ({beat.get('host')}:{beat.get('pid')}) stopped reporting "
            f"{time.time() - float(beat.get('t', 0)):.0f} s ago: its tasks died with it",
        )
    return JobState(RUNNING if running_now(job.run_dir.journal) else PENDING)


def cancel_detached(jobs: list[Job]) -> None:
    """Mark each run cancelled; its driver (any host) cancels the task, or its pack stops just that run;
    a run not started yet never starts. Waits a moment for running ones to journal KILLED."""
    for job in jobs:
        job.run_dir.mark_cancelled("cancelled by orch cancel")
    deadline = time.monotonic() + CANCEL_GRACE_S + HEARTBEAT_S
    running = [j for j in jobs if running_now(j.run_dir.journal)]
    while running and time.monotonic() < deadline:
        running = [j for j in running if not ended_last(j.run_dir.journal)]
        time.sleep(0.2)


class DetachedRayBackend(RayBackend):
    """Runs on a Ray cluster owned by a detached driver process: they outlive ``orch submit``."""

    blocking = False

    def submit(self, run_dirs: list[RunDir]) -> list[str]:
        if not run_dirs:
            return []
        token = uuid.uuid4().hex[:12]
        folder = run_dirs[0].path.parent / ".ray" / token
        folder.mkdir(parents=True)
        resources = self._resources()
        for index, run_dir in enumerate(run_dirs):
            atomic_write(
                run_dir.scheduler_record,
                json.dumps(
                    {  # `logs`: what `orch logs` shows besides the run's own
                        "scheduler": "ray",
                        "token": token,
                        "index": index,
                        "folder": str(folder),
                        "logs": [str(folder / "driver.log")],
                    }
                ).encode(),
            )
        manifest = {
            "address": self.address,
            "runs": [str(r.path) for r in run_dirs],
            "resources": resources.model_dump(),
            "time_limit_s": self.time_limit_s,
            "max_retries": self.max_retries,
        }
        atomic_write(folder / "manifest.json", json.dumps(manifest).encode())
        log = open(folder / "driver.log", "ab")  # noqa: SIM115 - the detached driver inherits it, then we close ours
        # its own session and no terminal: closing the shell (SIGHUP) or Ctrl-C in it never reaches the driver
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.backends.ray_driver", str(folder)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]
                ),
            },
        )
        log.close()
        deadline = time.monotonic() + DRIVER_START_S
        while not read_json(folder / DRIVER_FILE).get("submitted"):
            if proc.poll() is not None:
                tail = (folder / "driver.log").read_text(errors="replace")[-2000:]
                raise InputError(
                    f"the detached Ray driver failed to submit the runs (exit {proc.returncode}); "
                    f"its log {folder / 'driver.log'} ends with:\n{tail}",
                    "--backend ray",
                )
            if time.monotonic() > deadline:
                break  # still connecting: the runs are its; status will say what became of them
            time.sleep(0.2)
        return [f"{DETACHED_PREFIX}{token}:{i}" for i in range(len(run_dirs))]

    def poll(self, jobs: list[Job]) -> list[JobState]:
        return [detached_state(job) for job in jobs]

    def cancel(self, jobs: list[Job]) -> None:
        cancel_detached(jobs)
