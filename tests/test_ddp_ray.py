"""A multi-task run on Ray (the session's local Ray, 2 CPUs; gloo): a placement group of 2 bundles, one Ray
task per rank under a coordinator holding no CPU. looped_tf on 2 "nodes" x 1 task (SPREAD: both bundles land
on the one node here) and on 1 x 2 (STRICT_PACK) is one MLflow run equal to the local multi-task run; a rank
killed mid-run fails the run naming it; a placement group the cluster cannot hold is refused (exit 2)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import psutil
import pytest
from support import wait_for
from test_ddp_local import REL, TINY, history

from orchestrator.backends.base import DONE, Job
from orchestrator.backends.ray import RayBackend
from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run
from orchestrator.spec.spec import Resources
from orchestrator.tracking.records import Tag

pytestmark = pytest.mark.ray


def spec_for(store, name: str, resources: dict, backend: str = "ray", **params):
    return store.spec(
        {
            "name": name,
            "workload": "looped_tf",
            "backend": backend,
            "params": {**TINY, **params},
            "resources": {"mem_gb": 0.5, **resources},
            "tracking": {"system_metrics_s": 0},
        },
        name=f"{name}.yaml",
    )


def test_looped_tf_on_two_ray_bundles_equals_the_local_multi_task_run(store, ray_local):
    store.orch("submit", str(spec_for(store, "dr_local", {"tasks_per_node": 2}, backend="local")), check=True)
    (local,) = store.seed_runs("dr_local")
    expected = history(store, local, "train_loss")
    for name, resources in (("dr_nodes", {"nodes": 2}), ("dr_tasks", {"tasks_per_node": 2})):
        store.orch("submit", str(spec_for(store, name, resources)), check=True)
        (run,) = store.seed_runs(name)
        assert run.status == "FINISHED", run.tags.get(Tag.ERROR)
        curve = history(store, run, "train_loss")
        assert [s for s, _ in curve] == [s for s, _ in expected] == [4, 9, 14, 19]
        assert all(v == pytest.approx(w, rel=REL) for (_, v), (_, w) in zip(curve, expected, strict=True))
        assert run.metrics["final_err"] == pytest.approx(local.metrics["final_err"], rel=REL)
        (end,) = RunDir(Path(run.tags[Tag.RUN_DIR])).ranks.glob("*/rank1.json")
        assert json.loads(end.read_text())["status"] == "FINISHED"


def test_a_ray_rank_killed_mid_run_fails_the_run(ray_local, tmp_path):
    from workloads.looped_tf import Params

    params = Params(**{**TINY, "steps": 100000, "checkpoint_every": 100000, "log_every": 1}).model_dump(mode="json")
    run_dir = RunDir(tmp_path / "kill")
    run_dir.create(
        {
            "run": Run("looped_tf", params, 0, "base").to_dict(),
            "run_id": "x",
            "cpus": 1,
            "tasks_per_node": 2,
            "system_metrics_s": 0,
        }
    )
    backend = RayBackend(resources=Resources(tasks_per_node=2, mem_gb=0.5))
    (job_id,) = backend.submit([run_dir])
    wait_for(lambda: any(r["event"] == "metrics" for r in events(run_dir)), 120, "the first step")
    rank1 = wait_for(  # rank 1's Ray worker: the process writing the run's stderr.rank1.log
        lambda: next((p for p in psutil.process_iter() if _writes(p, run_dir.path / "stderr.rank1.log")), None),
        30,
        "rank 1's process",
    )
    rank1.send_signal(signal.SIGKILL)
    wait_for(lambda: backend.poll([Job(job_id, run_dir)])[0].state == DONE, 120, "the run's end")
    end = [r for r in events(run_dir) if r["event"] == "end"][-1]
    assert end["status"] == "FAILED" and end["error"].startswith("rank 1"), end


def events(run_dir: RunDir) -> list[dict]:
    return read_journal(run_dir.journal)[0]


def _writes(proc: psutil.Process, path: Path) -> bool:
    try:
        return any(f.path == str(path) for f in proc.open_files())
    except (psutil.Error, OSError):
        return False


def test_a_placement_group_the_cluster_cannot_hold_is_refused(store, ray_local):
    result = store.orch("submit", str(spec_for(store, "dr_big", {"tasks_per_node": 3})))
    assert result.exit_code == 2 and "no node of the Ray cluster" in " ".join(result.output.split()), result.output
    result = store.orch("submit", str(spec_for(store, "dr_big2", {"nodes": 3})))
    assert result.exit_code == 2 and "3 ranks" in " ".join(result.output.split()), result.output
    assert store.ledger().experiment_id("dr_big") is None
