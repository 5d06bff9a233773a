"""What runs inside a Ray task (imports no MLflow): the same worker as every other backend, one run, a pack
of ``runs_per_job`` runs, or a multi-task run's ranks, with ``time_min`` enforced in the task (Ray has no time
limit of its own).

A multi-task run (``nodes`` x ``tasks_per_node``) is a coordinator task holding no CPU (``run_dist_in_task``):
it reserves a placement group of one bundle per rank (STRICT_PACK on one node, SPREAD over several), finds a
free port on the node of bundle 0 (MASTER_ADDR, MASTER_PORT), starts one Ray task per rank on its bundle with
torchrun's environment (LOCAL_RANK: its place among the bundles on its node), and watches them as the local
supervisor does (job/ranks.py): a rank lost without a word is named, the others stopped after a grace period.
Why not Ray Train's TorchTrainer: it owns the training loop's process, its own checkpoints and result storage
and reports through ``ray.train.report``; orch's worker (journal, checkpoint.pkl, requeue, one MLflow run)
would run inside it as a guest. A placement group and plain tasks keep the worker the same on every backend."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from orchestrator.job.pack import Pack
from orchestrator.job.rundir import RunDir, output_to

RANK_GRACE_S = 10.0  # after a rank failed: how long the others have to end on their own before they are cancelled


@contextmanager
def time_limit(seconds: int | None) -> Iterator[None]:
    """Raise ``Terminated`` in the run once ``seconds`` passed (the worker journals KILLED with the reason).
    A Ray task runs in its worker's main thread, where SIGALRM is delivered."""
    from orchestrator.job import worker

    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise worker.Terminated(f"time limit reached: resources.time_min={seconds / 60:g} (enforced by orch on Ray)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_in_task(path: str, time_limit_s: int | None = None) -> str:
    """Body of a Ray task: the same worker as every other backend. Returns the run's status."""
    from orchestrator.job import jobpath, worker

    jobpath.drop_working_directory()
    run_dir = RunDir(Path(path))
    with output_to(run_dir), time_limit(time_limit_s):
        return worker.execute(path)


def run_pack_in_task(paths: list[str], gpu_share: float, time_limit_s: int | None = None) -> str:
    """Body of a Ray task holding ``runs_per_job`` runs: one process each (job/pack.py), the task's GPUs
    shared between them; each run enforces the time limit itself."""
    return ",".join(Pack(paths, gpu_share, time_limit_s=time_limit_s).run())


def run_rank_in_task(path: str, environ: dict[str, str], time_limit_s: int | None = None) -> str:
    """One rank of a multi-task run, in a Ray worker process of its own (``max_calls=1``: the process group and
    the environment end with it)."""
    from orchestrator.job import jobpath, worker

    os.environ.update(environ)
    jobpath.drop_working_directory()
    with output_to(RunDir(Path(path)), int(environ["RANK"])), time_limit(time_limit_s):
        return worker.execute(path)


def _master() -> tuple[str, int]:
    import ray

    from orchestrator.job.dist import free_port

    return ray.util.get_node_ip_address(), free_port()


def run_dist_in_task(
    path: str, nodes: int, tasks_per_node: int, bundle: dict[str, float], time_limit_s: int | None = None
) -> str:
    """The coordinator of a multi-task run (module docstring). Returns rank 0's status."""
    import ray
    from ray.util.placement_group import placement_group, placement_group_table, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from orchestrator.job import dist
    from orchestrator.job.ranks import close_unended

    world = nodes * tasks_per_node
    group = placement_group([dict(bundle) for _ in range(world)], strategy="STRICT_PACK" if nodes == 1 else "SPREAD")
    refs: dict[int, Any] = {}
    try:
        ray.get(group.ready())
        on_node = placement_group_table(group)["bundles_to_node_id"]

        def at(index: int) -> PlacementGroupSchedulingStrategy:
            return PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=index)

        addr, port = ray.get(ray.remote(_master).options(num_cpus=0, scheduling_strategy=at(0)).remote())
        token = uuid.uuid4().hex[:12]
        layout = []
        for rank in range(world):
            mates = [i for i in range(world) if on_node[i] == on_node[rank]]
            layout.append(dist.DistEnv(rank, world, mates.index(rank), len(mates), addr, port, token))
        task: Any = ray.remote(max_calls=1)(run_rank_in_task)
        for env in layout:
            refs[env.rank] = task.options(
                num_cpus=bundle.get("CPU", 0),
                num_gpus=bundle.get("GPU", 0),
                max_retries=0,
                scheduling_strategy=at(env.rank),
            ).remote(path, env.environ(), time_limit_s)
        status = _watch(ray, refs, RunDir(Path(path)), layout)
        close_unended(RunDir(Path(path)), layout[0], f"rank 0: {status}")
        return status
    except BaseException:  # cancelled (ray.cancel: KeyboardInterrupt here): the ranks too, then the group
        for ref in refs.values():
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        with contextlib.suppress(Exception):
            ray.wait(list(refs.values()), num_returns=len(refs), timeout=RANK_GRACE_S)
        raise
    finally:
        with contextlib.suppress(Exception):
            remove_placement_group(group)


def _watch(ray: Any, refs: dict[int, Any], run_dir: RunDir, layout: list[Any]) -> str:
    """Wait for every rank; a rank whose task died (its worker lost: no end of its own) gets one written for
    it; once one failed, the others have RANK_GRACE_S before they are cancelled. Returns rank 0's outcome."""
    from orchestrator.job import dist

    pending, outcome, failed_at, cancelled = dict(refs), {}, None, False
    while pending:
        ready, _ = ray.wait(list(pending.values()), num_returns=1, timeout=0.5)
        for ref in ready:
            rank = next(r for r, x in pending.items() if x == ref)
            del pending[rank]
            try:
                outcome[rank] = ray.get(ref)
            except Exception as err:  # the task itself died (worker crash, OOM kill, cancel)
                outcome[rank] = f"ray task ended: {type(err).__name__}"
                if rank > 0 and not dist.end_file(run_dir, layout[rank].token, rank).exists():
                    dist.report_end(run_dir, layout[rank], "FAILED", f"rank {rank} lost: {type(err).__name__}")
            if outcome[rank] != "FINISHED" and failed_at is None:
                failed_at = time.monotonic()
        if failed_at is not None and not cancelled and pending and time.monotonic() - failed_at > RANK_GRACE_S:
            for ref in pending.values():
                ray.cancel(ref)
            cancelled = True
    return str(outcome.get(0, "lost"))
