"""Connecting to Ray as ``cluster/ray.yaml`` says: a private local Ray or a cluster's address, with Ray's
defaults that bite set first (usage stats off, an explicit token auth mode, a known temp dir; docs/ray.md),
and the check that some node can hold one run before anything is submitted."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from orchestrator.backends.ray_settings import RaySettings, load_ray_settings
from orchestrator.errors import InputError


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
        token = Path(
            os.environ.get("RAY_AUTH_TOKEN_PATH") or settings.auth_token_path or Path.home() / ".ray" / "auth_token"
        ).expanduser()
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
            ray.init(
                num_cpus=settings.num_cpus or os.cpu_count(),
                num_gpus=settings.num_gpus,
                include_dashboard=settings.include_dashboard,
                **kwargs,
            )
        else:
            ray.init(address=address, **kwargs)
    except ConnectionError as err:
        raise InputError(
            f"cannot reach a Ray cluster at '{address}': {err}. Start one with `ray start --head` "
            "(same RAY_TMPDIR and auth token as orch, see docs/ray.md) or drop --ray-address "
            "to use a local Ray",
            "--ray-address",
        ) from None
    return ray


def require(ray, needs: dict[str, float], source: str) -> None:
    """Ray queues a task that no node can hold forever, silently: say so before anything is submitted."""
    needs = {k: v for k, v in needs.items() if v}
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    if any(all(node.get(k, 0.0) >= v for k, v in needs.items()) for node in nodes):
        return

    def show(res: dict[str, float]) -> str:  # a fixed order: Ray's resource dicts have none
        return ", ".join(
            f"{k}={res[k] / 2**30:.1f}GB" if k == "memory" else f"{k}={res[k]:g}"
            for k in ("CPU", "GPU", "memory")
            if k in res
        )

    largest: dict[str, float] = max(nodes, key=lambda n: (n.get("CPU", 0), n.get("memory", 0)), default={})
    raise InputError(
        f"no node of the Ray cluster can hold one run ({show(needs)}); the largest node has "
        f"{show(largest) or 'nothing'}: lower resources.cpus/gpus/mem_gb or join a bigger cluster",
        source,
    )
