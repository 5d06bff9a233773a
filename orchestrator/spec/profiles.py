"""Cluster profiles: for Slurm, what a user sets once per cluster (partition, account, setup lines, limits) in
``cluster/<name>.yaml``, and how a spec's ``resources`` map onto Slurm options. Requests a profile
knows to be impossible are refused here, before anything is created or queued. For Ray, ``cluster/ray.yaml``:
where Ray runs and the defaults orch sets for it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import InputError, did_you_mean
from orchestrator.spec.spec import Resources, load_yaml

PROJECT_CLUSTER_DIR = Path(__file__).resolve().parents[2] / "cluster"  # the checkout's cluster/


class Limits(BaseModel):
    """What one job may ask for on this cluster; None = not known, the scheduler will judge."""
    model_config = ConfigDict(extra="forbid")

    cpus: int | None = Field(None, gt=0, description="most CPU cores per task on one node")
    gpus: int | None = Field(None, ge=0, description="most GPUs per node (0: no GPU on this cluster/partition)")
    mem_gb: float | None = Field(None, gt=0, description="most memory per node")
    time_min: int | None = Field(None, gt=0, description="the partition's time limit")


class ClusterProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = ""
    partition: str | None = Field(None, description="sbatch --partition")
    account: str | None = Field(None, description="sbatch --account")
    qos: str | None = Field(None, description="sbatch --qos")
    constraint: str | None = Field(None, description="sbatch --constraint (node features, e.g. a GPU model)")
    gpu_type: str | None = Field(None, description="GPU model in the gres name: gres=gpu:<type>:<n>")
    setup: list[str] = Field([], description="shell lines run before the job (module load, activate an env)")
    array_parallelism: int = Field(64, gt=0, description="array tasks of one submission running at once")
    max_array_size: int | None = Field(None, gt=0, description="the cluster's MaxArraySize (asked from "
                                                               "scontrol when not set)")
    signal_delay_s: int = Field(120, ge=0, description="SIGUSR2 this long before the time limit: checkpoint and requeue")
    max_requeues: int = Field(3, ge=0, description="requeues (preemption or time limit) before a run is failed")
    job_folder: str | None = Field(None, description="root of the run directories on the shared filesystem "
                                                     "(replaces the spec's default workdir)")
    own_jobs_only: bool = Field(False, description="squeue/sacct show only the user's own jobs (informative)")
    sbatch: dict[str, Any] = Field({}, description="any other sbatch option, e.g. {exclusive: true}")
    limits: Limits = Limits()

    def check(self, resources: Resources, source: str = "resources") -> None:
        """Refuse what this cluster cannot give, with the field and the limit."""
        limits = self.limits
        wanted = {"cpus": resources.cpus, "gpus": resources.gpus, "mem_gb": resources.mem_gb,
                  "time_min": resources.time_min}
        for field, value in wanted.items():
            limit = getattr(limits, field)
            if limit is not None and value > limit:
                what = "has no GPU" if field == "gpus" and limit == 0 else f"allows at most {limit}"
                raise InputError(f"asks for {value} but cluster profile '{self.name}' {what} "
                                 f"(cluster/{self.name}.yaml: limits.{field})", source, f"resources.{field}")

    def slurm_parameters(self, resources: Resources) -> dict[str, Any]:
        """submitit SlurmExecutor parameters for one run of these resources."""
        params: dict[str, Any] = {
            "cpus_per_task": resources.cpus, "mem": f"{int(resources.mem_gb * 1024)}M",
            "time": resources.time_min, "nodes": 1, "ntasks_per_node": 1,
            "signal_delay_s": self.signal_delay_s, "array_parallelism": self.array_parallelism,
        }
        for key in ("partition", "account", "qos", "constraint"):
            if getattr(self, key):
                params[key] = getattr(self, key)
        if resources.gpus:
            params["gres"] = f"gpu:{self.gpu_type + ':' if self.gpu_type else ''}{resources.gpus}"
        if self.setup:
            params["setup"] = list(self.setup)
        if self.sbatch:
            params["additional_parameters"] = dict(self.sbatch)
        return params


def search_path() -> list[Path]:
    """``$ORCH_CLUSTER_DIR``, then ``./cluster``, then the profiles shipped with orch."""
    dirs = [Path(os.environ["ORCH_CLUSTER_DIR"])] if os.environ.get("ORCH_CLUSTER_DIR") else []
    return [*dirs, Path.cwd() / "cluster", PROJECT_CLUSTER_DIR]


def available() -> list[str]:
    names = {p.stem for d in search_path() if d.is_dir() for p in d.glob("*.yaml")}
    return sorted(names)


def load_profile(name: str | None, source: str = "cluster") -> ClusterProfile:
    """A profile by name (``plafrim``) or path (``my/cluster.yaml``)."""
    if not name:
        raise InputError(f"the slurm backend needs a cluster profile: --cluster NAME or 'cluster:' in the "
                         f"spec; known: {', '.join(available()) or 'none'}", source)
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
    else:
        found = next((d / f"{name}.yaml" for d in search_path() if (d / f"{name}.yaml").is_file()), None)
        if found is None:
            raise InputError(f"no cluster profile '{name}'{did_you_mean(name, available())}; known: "
                             f"{', '.join(available()) or 'none'} (looked in {', '.join(map(str, search_path()))})",
                             source)
        path = found
    doc = {k: v for k, v in load_yaml(path).items() if v is not None}  # `limits:` with only comments under it
    try:
        profile = ClusterProfile.model_validate(doc)
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        raise InputError(f"{first['msg']} (got {first.get('input')!r})", str(path),
                         ".".join(str(p) for p in first["loc"])) from None
    profile.name = profile.name or path.stem
    return profile


def apply_profile(spec):
    """The spec with the profile's job folder as its workdir, unless the spec chose one itself."""
    from orchestrator.spec.spec import Spec
    profile = load_profile(spec.cluster, f"{spec.source}: cluster")
    if profile.job_folder and spec.workdir == Spec.model_fields["workdir"].default:
        return spec.model_copy(update={"workdir": os.path.expandvars(os.path.expanduser(profile.job_folder))})
    return spec


# -- Ray ---------------------------------------------------------------------------------------------
class RaySettings(BaseModel):
    """``cluster/ray.yaml``: where Ray runs and the defaults orch sets for it."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(None, description="null: a private local Ray on this machine; 'auto' or "
                                                  "host:port: join a running cluster (ray start --head)")
    num_cpus: int | None = Field(None, gt=0, description="local Ray only: cores Ray may use (null: all)")
    num_gpus: int | None = Field(None, ge=0, description="local Ray only: GPUs Ray may use (null: detect)")
    temp_dir: str | None = Field(None, description="RAY_TMPDIR (null: $RAY_TMPDIR, else /tmp/orch-ray-<user>); "
                                                   "'auto' finds a cluster through it")
    auth_mode: Literal["token", "disabled"] = Field("token", description="RAY_AUTH_MODE, set explicitly")
    auth_token_path: str | None = Field(None, description="RAY_AUTH_TOKEN_PATH (null: ~/.ray/auth_token, "
                                                          "created if missing)")
    usage_stats: bool = Field(False, description="Ray's usage statistics reporting")
    include_dashboard: bool = Field(False, description="start Ray's dashboard with a local Ray")
    log_to_driver: bool = Field(False, description="echo every task's output in the orch terminal")


def ray_profile_path() -> Path | None:
    """``cluster/ray.yaml`` in the working directory, else the one shipped next to the package."""
    for folder in (Path.cwd() / "cluster", PROJECT_CLUSTER_DIR):
        if (folder / "ray.yaml").is_file():
            return folder / "ray.yaml"
    return None


def load_ray_settings(path: Path | None = None) -> RaySettings:
    path = path or ray_profile_path()
    if path is None:
        return RaySettings()
    try:
        return RaySettings.model_validate(load_yaml(path))
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        raise InputError(f"{first['msg']} (got {first.get('input')!r})", str(path),
                         ".".join(str(p) for p in first["loc"])) from None
