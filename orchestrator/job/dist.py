"""A multi-task run (``resources.nodes`` x ``tasks_per_node`` processes, one run): each process's place in the
torch.distributed group, the process group itself, and how the ranks tell rank 0 how they ended.

Every backend starts the ranks with the torchrun environment (``MASTER_ADDR``, ``MASTER_PORT``, ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``; Slurm's from submitit's ``TorchDistributedEnvironment``)
plus ``ORCH_DIST_TOKEN``, one token per attempt of the run, and runs the same worker in each. Rank 0 is the
run as a one-process run is: it journals, checkpoints and ends the run. The others journal nothing; each
writes ``ranks/<token>/rank<r>.json`` when it ends (status, error, traceback), and rank 0 reads them before
journaling the run's end: a run is FINISHED only when every rank finished, and a failed run carries the
traceback of the rank that failed first (its own error, "connection closed by peer", is only the echo).

Imports torch only inside the functions that need it: a command workload's ranks never import it."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

from orchestrator.job.rundir import RunDir, atomic_write

TOKEN_ENV = "ORCH_DIST_TOKEN"  # one attempt of one multi-task run: where its ranks' ends go
BACKEND_ENV = "ORCH_DIST_BACKEND"  # nccl (CUDA) or gloo (CPU): what orch initialised, for a command to read
TORCHRUN_VARS = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
PEER_FAILURE_WAIT_S = 5.0  # rank 0 failed: how long it waits for a peer's earlier failure (the cause)
PEER_END_WAIT_S = 120.0  # rank 0 finished: how long it waits for every peer's end before failing the run
INIT_TIMEOUT_S = 600.0  # torch.distributed's collectives time out after this (torch's default: 30 min)


# set in a local rank by its supervisor (job/ranks.py): rank 0's system metrics sample every rank under it
SUPERVISOR_ENV = "ORCH_RANKS_SUPERVISOR"


@dataclass(frozen=True)
class DistEnv:
    """This process's place in its run's group."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int
    token: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def environ(self) -> dict[str, str]:
        """The variables a rank is started with (torchrun's names, so a user's DDP script runs unchanged)."""
        return {
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            TOKEN_ENV: self.token,
        }


def from_environ(environ: dict[str, str] | None = None) -> DistEnv | None:
    """This process's DistEnv when a backend started it as a rank of a multi-task run (``ORCH_DIST_TOKEN``
    set), else None (a one-process run: torchrun variables of the user's own are left alone)."""
    env = os.environ if environ is None else environ
    if not env.get(TOKEN_ENV):
        return None
    try:
        return DistEnv(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", env["RANK"])),
            local_world_size=int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])),
            master_addr=env["MASTER_ADDR"],
            master_port=int(env["MASTER_PORT"]),
            token=env[TOKEN_ENV],
        )
    except (KeyError, ValueError) as err:
        raise RuntimeError(f"{TOKEN_ENV} is set but the torchrun variables are not complete: {err}") from None


def local_layout(world_size: int, master_port: int, token: str) -> list[DistEnv]:
    """The ranks of a run on one machine (local backend): MASTER_ADDR is the loopback."""
    return [DistEnv(r, world_size, r, world_size, "127.0.0.1", master_port, token) for r in range(world_size)]


def free_port() -> int:
    """A TCP port free now on this host, for MASTER_PORT (the kernel's pick; rank 0 binds it a moment later)."""
    import socket

    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


# -- the process group (Python workloads: orch initialises it, the workload wraps its model) -------------
def backend_for(device: str) -> str:
    return "nccl" if device.startswith("cuda") else "gloo"


def init_group(env: DistEnv, device: str) -> str:
    """``init_process_group`` from the environment (env://) on this rank's device; returns the backend."""
    from datetime import timedelta

    import torch
    import torch.distributed as torch_dist

    backend = backend_for(device)
    if device.startswith("cuda"):
        torch.cuda.set_device(env.local_rank)
    os.environ[BACKEND_ENV] = backend
    torch_dist.init_process_group(
        backend,
        init_method="env://",
        rank=env.rank,
        world_size=env.world_size,
        timeout=timedelta(seconds=INIT_TIMEOUT_S),
    )
    return backend


def barrier() -> None:
    """Every rank waits here for the others (a no-op outside a process group)."""
    import sys

    if "torch" not in sys.modules:
        return
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()


def close_group() -> None:
    import sys

    if "torch" not in sys.modules:
        return
    import torch.distributed as torch_dist

    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


# -- how each rank ended -------------------------------------------------------------------------------
def end_file(run_dir: RunDir, token: str, rank: int) -> Any:
    return run_dir.ranks / token / f"rank{rank}.json"


def report_end(
    run_dir: RunDir, env: DistEnv, status: str, error: str | None = None, traceback: str | None = None
) -> None:
    """Rank ``env.rank`` (> 0) ended: rank 0 reads this before it journals the run's end. A launcher that saw a
    rank die without a word (SIGKILL, OOM) writes it for that rank."""
    path = end_file(run_dir, env.token, env.rank)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"t": time.time(), "rank": env.rank, "status": status, "error": error, "traceback": traceback}
    atomic_write(path, json.dumps(record).encode())


def peer_ends(run_dir: RunDir, env: DistEnv) -> dict[int, dict[str, Any]]:
    """The ends the other ranks of this attempt reported so far, by rank."""
    out: dict[int, dict[str, Any]] = {}
    for rank in range(1, env.world_size):
        try:
            out[rank] = json.loads(end_file(run_dir, env.token, rank).read_text())
        except (OSError, ValueError):
            continue
    return out


def first_failure(ends: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    failed = [e for e in ends.values() if e.get("status") == "FAILED"]
    return min(failed, key=lambda e: e.get("t", 0)) if failed else None


def wait_for_peers(run_dir: RunDir, env: DistEnv, timeout: float, any_failure: bool = False) -> dict[int, dict]:
    """Peers' ends, waiting up to ``timeout`` s for all of them (or, ``any_failure``, for the first failure)."""
    deadline = time.monotonic() + timeout
    while True:
        ends = peer_ends(run_dir, env)
        if len(ends) == env.world_size - 1 or (any_failure and first_failure(ends)):
            return ends
        if time.monotonic() > deadline:
            return ends
        time.sleep(0.1)


def settle(
    run_dir: RunDir, env: DistEnv, status: str, error: str | None, traceback: str | None
) -> tuple[str, str | None, str | None]:
    """Rank 0's verdict on the whole run from its own outcome and its peers': FINISHED only when every rank
    finished; a failure names the rank that failed first, with its traceback."""
    if status == "FINISHED":
        ends = wait_for_peers(run_dir, env, PEER_END_WAIT_S)
        failure = first_failure(ends)
        if failure is not None:
            return "FAILED", f"rank {failure['rank']}: {failure.get('error')}", failure.get("traceback")
        silent = [r for r in range(1, env.world_size) if r not in ends]
        if silent:
            return (
                "FAILED",
                f"rank(s) {', '.join(map(str, silent))} did not report an end within {PEER_END_WAIT_S:g} s "
                "of rank 0's (their logs: orch logs)",
                None,
            )
        return status, error, traceback
    if status == "FAILED":
        failure = first_failure(wait_for_peers(run_dir, env, PEER_FAILURE_WAIT_S, any_failure=True))
        if failure is not None:
            own = f" (rank 0 then: {error})" if error else ""
            return "FAILED", f"rank {failure['rank']}: {failure.get('error')}{own}", failure.get("traceback")
        return status, f"rank 0: {error}", traceback
    return status, error, traceback
