"""Ray backend: each run is a Ray task that calls ``orchestrator.job.worker.execute(run_dir)``.

The task only writes its run directory (journal, checkpoint, logs), exactly like a local or Slurm job, so
the orchestrator ingests it into MLflow the same way. poll = ``ray.wait`` on the tasks' object refs,
cancel = ``ray.cancel`` (the worker journals KILLED). Ray tasks die with the driver that owns them, so the
backend is blocking: ``orch submit`` follows its jobs to the end.

Ray's defaults that bite are set here, once, before ``ray.init`` (see docs/ray.md): usage stats off, an
explicit token auth mode with a token file orch creates if missing, a known temp dir, no dashboard, worker
logs kept out of the driver's terminal (they are in each run directory)."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.backends.base import DONE, LOST, PENDING, RUNNING, Job, JobState
from orchestrator.errors import InputError
from orchestrator.job.journal import last_event
from orchestrator.job.liveness import pid_alive
from orchestrator.job.rundir import RunDir, output_to
from orchestrator.spec.profiles import RaySettings, load_ray_settings

if TYPE_CHECKING:
    from orchestrator.spec.spec import Spec

CANCEL_GRACE_S = 10.0


def resolve_address(cli_address: str | None, settings: RaySettings) -> str | None:
    """``--ray-address``, then ``RAY_ADDRESS``, then ``cluster/ray.yaml``; None means a local Ray."""
    address = cli_address or os.environ.get("RAY_ADDRESS") or settings.address
    return None if address in (None, "", "local") else address


def set_defaults(settings: RaySettings) -> dict[str, str]:
    """Environment for this process and every Ray process it starts. Values the user exported win."""
    user = os.environ.get("USER") or str(os.getuid())
    env = {
        "RAY_USAGE_STATS_ENABLED": "1" if settings.usage_stats else "0",
        "RAY_TMPDIR": settings.temp_dir or os.environ.get("RAY_TMPDIR") or f"/tmp/orch-ray-{user}",
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE") or settings.auth_mode,
    }
    if settings.temp_dir:
        os.environ["RAY_TMPDIR"] = settings.temp_dir  # the profile names it on purpose: it wins
    for name, value in env.items():
        os.environ.setdefault(name, value)
    if os.environ["RAY_AUTH_MODE"] == "token" and not os.environ.get("RAY_AUTH_TOKEN"):
        token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or settings.auth_token_path
                     or Path.home() / ".ray" / "auth_token").expanduser()
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(token)
        if not token.exists() or not token.read_text().strip():
            # Ray creates ~/.ray/auth_token only for a local ray.init; a worker joining a cluster, or a
            # custom path, would fail instead. One token per user, readable by that user only.
            token.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
    Path(os.environ["RAY_TMPDIR"]).mkdir(parents=True, exist_ok=True)
    # Tune's console: orch prints its own summary; Tune's per-trial tables (new output engine) would drown it.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    return {k: os.environ[k] for k in ("RAY_USAGE_STATS_ENABLED", "RAY_TMPDIR", "RAY_AUTH_MODE")}


def find_cluster() -> str | None:
    """What 'auto' means: the cluster recorded under orch's RAY_TMPDIR, else under Ray's default /tmp/ray
    (a cluster started with a plain `ray start --head`, which Ray's own 'auto' would no longer see once orch
    has set RAY_TMPDIR)."""
    for root in (Path(os.environ["RAY_TMPDIR"]) / "ray", Path("/tmp/ray")):
        record = root / "ray_current_cluster"
        if record.is_file() and record.read_text().strip():
            return record.read_text().strip()
    return None


def connect(address: str | None = None, settings: RaySettings | None = None):
    """``ray.init`` once per process: a private local Ray with this machine's cores, or the cluster at
    ``address``. Reuses an existing connection (tests share one across a session)."""
    settings = settings or load_ray_settings()
    set_defaults(settings)
    import ray
    if ray.is_initialized():
        return ray
    address = resolve_address(address, settings)
    if address == "auto":
        address = find_cluster() or address
    kwargs: dict[str, Any] = dict(log_to_driver=settings.log_to_driver, configure_logging=True, logging_level="WARNING")
    try:
        if address is None:
            ray.init(num_cpus=settings.num_cpus or os.cpu_count(), num_gpus=settings.num_gpus,
                     include_dashboard=settings.include_dashboard, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError as err:
        raise InputError(f"cannot reach a Ray cluster at '{address}': {err}. Start one with `ray start --head` "
                         "(same RAY_TMPDIR and auth token as orch, see docs/ray.md) or drop --ray-address "
                         "to use a local Ray", "--ray-address") from None
    return ray


def run_in_task(path: str) -> str:
    """Body of a Ray task: the same worker as every other backend. Returns the run's status."""
    from orchestrator.job import worker
    run_dir = RunDir(Path(path))
    with output_to(run_dir):
        return worker.execute(path)


def resources_of(run_dir: RunDir, mem_gb: float | None) -> dict:
    job = run_dir.load()
    options = {"num_cpus": float(job.get("cpus", 1)), "num_gpus": float(job.get("gpus", 0)), "max_retries": 0}
    if mem_gb:
        options["memory"] = int(mem_gb * 2**30)
    return options


def require(ray, needs: dict[str, float], source: str) -> None:
    """Ray queues a task that no node can hold forever, silently: say so before anything is submitted."""
    needs = {k: v for k, v in needs.items() if v}
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(k, 0.0) >= v for k, v in needs.items()) for node in nodes):
        return

    def show(res: dict[str, float]) -> str:  # a fixed order: Ray's resource dicts have none
        return ", ".join(f"{k}={res[k] / 2**30:.1f}GB" if k == "memory" else f"{k}={res[k]:g}"
                         for k in ("CPU", "GPU", "memory") if k in res)
    largest: dict[str, float] = max(nodes, key=lambda n: (n.get("CPU", 0), n.get("memory", 0)), default={})
    raise InputError(f"no node of the Ray cluster can hold one run ({show(needs)}); the largest node has "
                     f"{show(largest) or 'nothing'}: lower resources.cpus/gpus/mem_gb or join a bigger cluster",
                     source)


@dataclass
class _Task:
    ref: Any  # a ray.ObjectRef
    run_dir: RunDir


class RayBackend:
    name = "ray"
    blocking = True  # a Ray task is owned by the driver process and dies with it

    def __init__(self, address: str | None = None, mem_gb: float | None = None, settings: RaySettings | None = None):
        self.address, self.settings = address, settings
        self.mem_gb = mem_gb
        self.host = socket.gethostname()
        self._tasks: dict[str, _Task] = {}
        self._remote: Any = None  # ray.remote(run_in_task), made once connected

    @classmethod
    def from_spec(cls, spec: Spec | None, ray_address: str | None = None, **_: Any) -> RayBackend:
        """``ray_address``: --ray-address; else RAY_ADDRESS, cluster/ray.yaml, else a local Ray."""
        backend = cls(ray_address, mem_gb=spec.resources.mem_gb if spec else None)
        if spec is not None:  # a run no node can hold would wait forever: refuse it before anything is created
            backend.require(backend.request(spec.resources.cpus, spec.resources.gpus), f"{spec.source}: resources")
        return backend

    @property
    def ray(self):
        """Connected on first use: ``orch status`` judges jobs of earlier processes without starting Ray."""
        ray = connect(self.address, self.settings)
        if self._remote is None:
            self._remote = ray.remote(run_in_task)
        return ray

    def request(self, cpus: float, gpus: float) -> dict[str, float]:
        needs = {"CPU": float(cpus), "GPU": float(gpus)}
        if self.mem_gb:
            needs["memory"] = self.mem_gb * 2**30
        return needs

    def require(self, needs: dict[str, float], source: str) -> None:
        require(self.ray, needs, source)

    def submit(self, run_dirs: list[RunDir]) -> list[str]:
        ids = []
        self.ray  # noqa: B018 - connect before the first task
        for run_dir in run_dirs:
            ref = self._remote.options(**resources_of(run_dir, self.mem_gb)).remote(str(run_dir.path))
            self._tasks[str(run_dir.path)] = _Task(ref, run_dir)
            ids.append(f"ray:{self.host}:{os.getpid()}:{ref.task_id().hex()}")
        return ids

    def poll(self, jobs: list[Job]) -> list[JobState]:
        mine = [self._tasks[str(j.run_dir.path)] for j in jobs if str(j.run_dir.path) in self._tasks]
        refs = [t.ref for t in mine]
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
                started = last_event(job.run_dir.journal, "start") is not None
                states.append(JobState(RUNNING if started else PENDING))
        return states

    def _failure(self, ref) -> str | None:
        """Why a finished task ended, when Ray knows it (worker crash, OOM kill, cancel)."""
        try:
            self.ray.get(ref, timeout=0)
            return None
        except Exception as err:  # noqa: BLE001 - any Ray error is the job's end reason
            return f"ray task ended: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"

    def _foreign(self, job: Job) -> JobState:
        """A task of an earlier orch process: its owner is gone, so the task is gone too (Ray kills the
        tasks of a dead driver) unless the journal shows it ended or its process is still alive here."""
        if last_event(job.run_dir.journal, "end") is not None:
            return JobState(DONE)
        start = last_event(job.run_dir.journal, "start")
        if start and start.get("host") == self.host and pid_alive(int(start["pid"])):
            return JobState(RUNNING)
        return JobState(LOST, "the orch process that owned this Ray task ended before the run did")

    def cancel(self, jobs: list[Job]) -> None:
        tasks = [self._tasks[str(j.run_dir.path)] for j in jobs if str(j.run_dir.path) in self._tasks]
        for task in tasks:
            self.ray.cancel(task.ref)  # KeyboardInterrupt in the task: the worker journals KILLED
        deadline = time.monotonic() + CANCEL_GRACE_S
        pending = [t.ref for t in tasks]
        while pending and time.monotonic() < deadline:
            _, pending = self.ray.wait(pending, num_returns=len(pending), timeout=0.2, fetch_local=False)
        for ref in pending:
            self.ray.cancel(ref, force=True)
        for job in jobs:  # tasks of another orch process: stop the worker if it runs on this host
            if str(job.run_dir.path) not in self._tasks:
                start = last_event(job.run_dir.journal, "start")
                if start and start.get("host") == self.host and self._foreign(job).state == RUNNING:
                    os.kill(int(start["pid"]), signal.SIGTERM)


__all__ = ["RayBackend", "connect", "resolve_address", "set_defaults"]
