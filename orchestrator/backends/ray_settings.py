"""Ray settings: ``cluster/ray.yaml``, where Ray runs and the defaults orch sets for it."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.backends.slurm_profile import SHIPPED_PROFILES
from orchestrator.errors import invalid
from orchestrator.spec.spec import load_yaml


class RaySettings(BaseModel):
    """``cluster/ray.yaml``: where Ray runs and the defaults orch sets for it."""

    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        None,
        description="null: a private local Ray on this machine; 'auto' or "
        "host:port: join a running cluster (ray start --head)",
    )
    num_cpus: int | None = Field(None, gt=0, description="local Ray only: cores Ray may use (null: all)")
    num_gpus: int | None = Field(None, ge=0, description="local Ray only: GPUs Ray may use (null: detect)")
    temp_dir: str | None = Field(
        None, description="RAY_TMPDIR (null: $RAY_TMPDIR, else /tmp/orch-ray-<user>); 'auto' finds a cluster through it"
    )
    auth_mode: Literal["token", "disabled"] = Field("token", description="RAY_AUTH_MODE, set explicitly")
    auth_token_path: str | None = Field(
        None, description="RAY_AUTH_TOKEN_PATH (null: ~/.ray/auth_token, created if missing)"
    )
    usage_stats: bool = Field(False, description="Ray's usage statistics reporting")
    include_dashboard: bool = Field(False, description="start Ray's dashboard with a local Ray")
    log_to_driver: bool = Field(False, description="echo every task's output in the orch terminal")
    max_retries: int = Field(
        3,
        ge=0,
        description="times Ray runs a task again when its worker or node dies; the run resumes from its checkpoint",
    )
    detach: bool = Field(
        True,
        description="on a Ray cluster (an address), runs outlive `orch submit`: a detached "
        "driver process owns them; false: orch submit follows them to the end",
    )


def ray_profile_path() -> Path | None:
    """``cluster/ray.yaml`` in the working directory, else the one shipped next to the package."""
    for folder in (Path.cwd() / "cluster", SHIPPED_PROFILES):
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
        raise invalid(err, str(path), model=RaySettings) from None
