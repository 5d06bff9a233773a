"""Slurm cluster profiles: what a user sets once per cluster (partition, account, setup lines, limits) in
``cluster/<name>.yaml``, and how a spec's ``resources`` map onto Slurm options. Requests a profile
knows to be impossible are refused here, before anything is created or queued."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from orchestrator.errors import InputError, did_you_mean, invalid
from orchestrator.spec.spec import Notify, Resources, Spec, deep_merge, load_yaml

SHIPPED_PROFILES = Path(__file__).resolve().parents[1] / "profiles"  # package data: plafrim, local-slurm, ray


TASK_LAYOUT = (
    "nodes",
    "ntasks",
    "ntasks_per_node",
    "tasks_per_node",
    "cpus_per_task",
    "gpus_per_task",
    "ntasks_per_gpu",
    "ntasks_per_socket",
    "ntasks_per_core",
    "array",
    "wrap",
)


class Limits(BaseModel):
    """What one job may ask for on this cluster; None = not known, the scheduler will judge."""

    model_config = ConfigDict(extra="forbid")

    cpus: int | None = Field(None, gt=0, description="most CPU cores per task on one node")
    nodes: int | None = Field(None, gt=0, description="most nodes one job may span (a multi-task run's nodes)")
    gpus: int | None = Field(None, ge=0, description="most GPUs per node (0: no GPU on this cluster/partition)")
    mem_gb: float | None = Field(None, gt=0, description="most memory per node")
    time_min: int | None = Field(None, gt=0, description="the partition's time limit")


class ClusterProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # the file it was read from: a profile's setup: lines run in every job, so orch says which one it used
    _file: str = PrivateAttr("")

    name: str = ""
    partition: str | None = Field(None, description="sbatch --partition")
    account: str | None = Field(None, description="sbatch --account")
    qos: str | None = Field(None, description="sbatch --qos")
    constraint: str | None = Field(None, description="sbatch --constraint (node features, e.g. a GPU model)")
    gpu_type: str | None = Field(None, description="GPU model in the request: gres=gpu:<type>:<n>, --gpus=<type>:<n>")
    gpu_request: Literal["gres", "gpus", "gpus-per-node", "constraint"] = Field(
        "gres",
        description="how a job asks for GPUs: --gres=gpu:[type:]n | --gpus=[type:]n | --gpus-per-node=[type:]n "
        "| constraint: the node feature in `constraint` and --exclusive, no GPU count (sites that "
        "select GPU nodes by feature)",
    )
    requeue: bool = Field(
        True,
        description="sbatch --requeue, so preemption and time limits requeue even where "
        "the site's JobRequeue=0; false: the site's default",
    )
    shared_fs_check: bool = Field(
        True,
        description="at submit, refuse a job folder on node-local storage (/tmp, "
        "tmpfs) and warn about a sqlite store on NFS/Lustre/BeeGFS",
    )
    max_jobs: int | None = Field(
        None,
        gt=0,
        description="jobs (array tasks) one user may have queued (QOS "
        "MaxSubmitJobs): a larger submission is refused before "
        "anything is queued",
    )
    setup: list[str] = Field([], description="shell lines run before the job (module load, activate an env)")
    notify: dict[str, Any] | None = Field(
        None, description="the spec's notify: section for every experiment on this cluster that has none"
    )
    array_parallelism: int = Field(64, gt=0, description="array tasks of one submission running at once")
    max_array_size: int | None = Field(
        None, gt=0, description="the cluster's MaxArraySize (asked from scontrol when not set)"
    )
    signal_delay_s: int = Field(
        120, ge=0, description="SIGUSR2 this long before the time limit: checkpoint and requeue"
    )
    max_requeues: int = Field(3, ge=0, description="requeues (preemption or time limit) before a run is failed")
    job_folder: str | None = Field(
        None, description="root of the run directories on the shared filesystem (replaces the spec's default workdir)"
    )
    own_jobs_only: bool = Field(False, description="squeue/sacct show only the user's own jobs (informative)")
    sbatch: dict[str, Any] = Field({}, description="any other sbatch option, e.g. {exclusive: true}")
    limits: Limits = Limits()

    @pydantic.field_validator("sbatch")
    @classmethod
    def _no_task_layout(cls, value: dict[str, Any]) -> dict[str, Any]:
        """A task count here would start the same run several times in one run directory (each task journaling
        it again). orch sets the layout itself, from the spec's resources (nodes, tasks_per_node)."""
        for key in value:
            if key.replace("-", "_") in TASK_LAYOUT:
                raise ValueError(
                    f"sbatch.{key}: orch sets the task layout itself, from the spec's resources: nodes, gpus_per_node, "
                    f"tasks_per_node (docs/distributed.md); remove it (refused: {', '.join(TASK_LAYOUT)})"
                )
        return value

    def check(self, resources: Resources, source: str = "resources") -> None:
        """Refuse what this cluster cannot give, with the field and the limit. Packed runs share one job:
        the limits apply to the job (runs_per_job runs' cores, memory, GPUs)."""
        limits = self.limits
        job = job_resources(resources)
        wanted = {"cpus": job["cpus"], "gpus": job["gpus"], "mem_gb": job["mem_gb"], "time_min": resources.time_min}
        if resources.world_size > 1:
            self._check_layout(resources, source)
            return
        packed = resources.runs_per_job > 1
        for field, value in wanted.items():
            limit = getattr(limits, field)
            if limit is not None and value > limit:
                what = "has no GPU" if field == "gpus" and limit == 0 else f"allows at most {limit}"
                per = f" for one job of {resources.runs_per_job} packed runs" if packed and field != "time_min" else ""
                raise InputError(
                    f"asks for {value:g}{per} but cluster profile '{self.name}' {what} "
                    f"({self._file or f'cluster/{self.name}.yaml'}: limits.{field})",
                    source,
                    "resources.runs_per_job" if per else f"resources.{field}",
                )
        if job["gpus"] and self.gpu_request == "constraint" and not self.constraint:
            raise InputError(
                f"cluster profile '{self.name}' asks for GPUs by node feature (gpu_request: constraint) "
                "but sets no 'constraint': the job would land on any node",
                source,
                "resources.gpus",
            )
        if resources.gpus != int(resources.gpus) and resources.runs_per_job == 1:
            # a fraction of a GPU is a share of one GPU between the runs of one job: with one run per job
            # Slurm would still give it a whole GPU
            raise InputError(
                f"gpus: {resources.gpus:g} on Slurm shares one GPU between the runs of one job: set "
                f"resources.runs_per_job (e.g. {math.ceil(1 / resources.gpus)})",
                source,
                "resources.gpus",
            )

    def _check_layout(self, resources: Resources, source: str) -> None:
        """A multi-task run's job against the limits: its nodes, and per node its tasks' cores and memory and
        its GPUs (the limits are a node's)."""
        limits, tasks = self.limits, resources.layout
        per_node = {
            "nodes": (resources.nodes, "resources.nodes", "nodes"),
            "cpus": (resources.cpus * tasks, "resources.cpus", f"cores per node ({tasks} tasks x {resources.cpus})"),
            "gpus": (resources.gpus_per_node, "resources.gpus_per_node", "GPUs per node"),
            "mem_gb": (
                resources.mem_gb * tasks,
                "resources.mem_gb",
                f"GB per node ({tasks} tasks x {resources.mem_gb:g})",
            ),
            "time_min": (resources.time_min, "resources.time_min", "minutes"),
        }
        for field, (value, where, what) in per_node.items():
            limit = getattr(limits, field)
            if limit is not None and value > limit:
                verdict = "has no GPU" if field == "gpus" and limit == 0 else f"allows at most {limit}"
                raise InputError(
                    f"asks for {value:g} {what} but cluster profile '{self.name}' {verdict} "
                    f"({self._file or f'cluster/{self.name}.yaml'}: limits.{field})",
                    source,
                    where,
                )
        if resources.gpus_per_node and self.gpu_request == "constraint" and not self.constraint:
            raise InputError(
                f"cluster profile '{self.name}' asks for GPUs by node feature (gpu_request: constraint) "
                "but sets no 'constraint': the job would land on any node",
                source,
                "resources.gpus_per_node",
            )

    def check_job_count(self, jobs: int, queued: int, source: str = "resources") -> None:
        """A submission of ``jobs`` array tasks, with ``queued`` jobs of this user already in the queue: refused
        when it would exceed ``max_jobs`` (QOS MaxSubmitJobs), saying how much packing would fit."""
        if self.max_jobs is None or jobs + queued <= self.max_jobs:
            return
        room = self.max_jobs - queued
        hint = (
            "wait for queued jobs to end"
            if room <= 0
            else f"pack runs: resources.runs_per_job so that at most {room} jobs are needed"
        )
        raise InputError(
            f"{jobs} jobs plus the {queued} already queued exceed cluster profile '{self.name}' "
            f"max_jobs={self.max_jobs} (the QOS limit): {hint}",
            source,
            "resources.runs_per_job",
        )

    def slurm_parameters(self, resources: Resources) -> dict[str, Any]:
        """submitit SlurmExecutor parameters for one job: one run, or ``runs_per_job`` runs packed together."""
        job = job_resources(resources)
        params: dict[str, Any] = {
            "cpus_per_task": job["cpus"],
            "mem": f"{int(job['mem_gb'] * 1024)}M",  # per node
            "time": resources.time_min,
            "nodes": resources.nodes,  # a multi-task run: nodes x tasks_per_node tasks, one rank each
            "ntasks_per_node": resources.layout,
            "signal_delay_s": self.signal_delay_s,
            "array_parallelism": self.array_parallelism,
        }
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        extra: dict[str, Any] = {"requeue": True} if self.requeue else {}
        gpus = job["gpus"]  # per node (--gres and --gpus-per-node count per node)
        if gpus:
            typed = f"{self.gpu_type}:{gpus}" if self.gpu_type else str(gpus)
            total = gpus * resources.nodes  # --gpus counts the job's
            if self.gpu_request == "gres":
                params["gres"] = f"gpu:{typed}"
            elif self.gpu_request == "gpus":
                extra["gpus"] = f"{self.gpu_type}:{total}" if self.gpu_type else str(total)
            elif self.gpu_request == "gpus-per-node":
                extra["gpus_per_node"] = typed
            else:  # constraint: the feature selects GPU nodes, the whole node is the job's
                params["exclusive"] = True
        if self.setup:
            params["setup"] = list(self.setup)
        extra.update(self.sbatch)
        if extra:
            params["additional_parameters"] = extra
        return params


def job_resources(resources: Resources) -> dict[str, Any]:
    """What one job asks for: ``runs_per_job`` runs' cores and memory, and the GPUs they need when
    ``runs_per_gpu`` of them share one (each run gets gpus/runs_per_gpu of a GPU). A multi-task run: cores per
    task, and per node its tasks' memory and ``gpus_per_node``."""
    if resources.world_size > 1 or (resources.gpus_per_node and resources.runs_per_job == 1):
        return {
            "cpus": resources.cpus,
            "mem_gb": resources.mem_gb * resources.layout,
            "gpus": resources.gpus_per_node,
        }
    n = resources.runs_per_job
    share = resources.gpus / resources.runs_per_gpu
    return {
        "cpus": resources.cpus * n,
        "mem_gb": resources.mem_gb * n,
        "gpus": math.ceil(n * share - 1e-9) if share else 0,
    }


def search_path() -> list[Path]:
    """``$ORCH_CLUSTER_DIR``, then ``./cluster``, then the profiles shipped with orch."""
    dirs = [Path(os.environ["ORCH_CLUSTER_DIR"])] if os.environ.get("ORCH_CLUSTER_DIR") else []
    return [*dirs, Path.cwd() / "cluster", SHIPPED_PROFILES]


def available() -> list[str]:
    names = {p.stem for d in search_path() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names - {"ray"})  # cluster/ray.yaml is the Ray profile (RaySettings), not a Slurm one


def load_profile(
    name: str | None, source: str = "cluster", overrides: dict[str, Any] | None = None, overrides_source: str = "spec"
) -> ClusterProfile:
    """A profile by name (``plafrim``) or path (``my/cluster.yaml``), with a spec's ``slurm:`` section
    (``overrides``) merged over it and validated by the same schema (errors name ``slurm.<field>``)."""
    if not name:
        raise InputError(
            f"the slurm backend needs a cluster profile: --cluster NAME or 'cluster:' in the "
            f"spec; known: {', '.join(available()) or 'none'}",
            source,
        )
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
    else:
        found = next((d / f"{name}.yaml" for d in search_path() if (d / f"{name}.yaml").is_file()), None)
        if found is None:
            raise InputError(
                f"no cluster profile '{name}'{did_you_mean(name, available())}; known: "
                f"{', '.join(available()) or 'none'} (looked in {', '.join(map(str, search_path()))})",
                source,
            )
        path = found
    doc = {k: v for k, v in load_yaml(path).items() if v is not None}  # `limits:` with only comments under it
    try:
        profile = ClusterProfile.model_validate(doc)
    except pydantic.ValidationError as err:
        raise invalid(err, str(path), model=ClusterProfile) from None
    if overrides:
        try:
            profile = ClusterProfile.model_validate(deep_merge(doc, overrides))
        except pydantic.ValidationError as err:
            raise invalid(
                err,
                overrides_source,
                "slurm",
                ClusterProfile,
                "; the spec's slurm: section takes the fields of a cluster profile (docs/slurm.md)",
            ) from None
    profile.name = profile.name or path.stem
    profile._file = str(path.resolve())
    return profile


def apply_profile(spec: Spec) -> Spec:
    """The spec with the profile's job folder as its workdir, unless the spec chose one itself, and the
    profile's notify: section, unless the spec has one."""
    profile = load_profile(spec.cluster, f"{spec.source}: cluster", spec.slurm, spec.source)
    update: dict[str, Any] = {}
    if profile.job_folder and spec.workdir == Spec.model_fields["workdir"].default:
        update["workdir"] = os.path.expandvars(os.path.expanduser(profile.job_folder))
    if profile.notify and spec.notify is None:  # the profile's, for every experiment that says nothing itself
        try:
            update["notify"] = Notify.model_validate(profile.notify)
        except pydantic.ValidationError as err:
            raise invalid(err, profile._file or profile.name, "notify", Notify) from None
    return spec.model_copy(update=update) if update else spec
