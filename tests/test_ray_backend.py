"""The Ray backend against real Ray: a local `ray.init` shared by the session (Ray costs seconds to start
on 2 cores), and a `ray start --head` cluster on 127.0.0.1 started and stopped by a test."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support import free_port, stop_group, wait_for

from orchestrator.backends.base import DONE, LOST, Job
from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run

pytestmark = pytest.mark.ray


def smoke_dir(root: Path, name: str, **params) -> RunDir:
    from workloads.smoke import Params

    run_dir = RunDir(root / name)
    run = Run("smoke", Params(**params).model_dump(mode="json"), 0, "base")
    run_dir.create({"run": run.to_dict(), "run_id": "x", "experiment_id": "0", "cpus": 1, "gpus": 0})
    return run_dir


def events(run_dir: RunDir) -> list[dict]:
    return read_journal(run_dir.journal)[0]


def seed_results(store, name: str) -> dict[str, tuple[str, float, list[float]]]:
    ledger = store.ledger()
    out = {}
    for record in store.seed_runs(name):
        history = [
            m.value for m in sorted(ledger.client.get_metric_history(record.run_id, "loss"), key=lambda m: m.step)
        ]
        out[record.tags["orch.seed"]] = (record.status, record.metrics["final_loss"], history)
    return out


def test_ray_backend_gives_the_same_metrics_as_local(store, ray_local):
    doc = {
        "name": "same_local",
        "workload": "smoke",
        "params": {"steps": 8, "noise": 0.3},
        "seeds": 2,
        "resources": {"cpus": 1, "mem_gb": 0.5},
    }
    store.orch("submit", str(store.spec(doc, "local.yaml")), check=True)
    store.orch("submit", str(store.spec({**doc, "name": "same_ray", "backend": "ray"}, "ray.yaml")), check=True)
    local, on_ray = seed_results(store, "same_local"), seed_results(store, "same_ray")
    assert set(local) == {"0", "1"} and local == on_ray
    assert local["0"][1] != local["1"][1]  # the seeds differ: equality above is not vacuous
    assert all(status == "FINISHED" and len(history) == 8 for status, _, history in on_ray.values())
    record = store.seed_runs("same_ray")[0]
    assert record.tags["orch.backend"] == "ray" and record.tags["orch.job_id"].startswith("ray:")
    assert Path(record.tags["orch.run_dir"], "stdout.log").exists()


def test_failure_cancel_and_foreign_jobs(tmp_path, ray_local):
    from orchestrator.backends.ray import RayBackend

    backend = RayBackend(mem_gb=0.5)
    slow, failing = smoke_dir(tmp_path, "slow", steps=400, sleep_s=0.05), smoke_dir(tmp_path, "fail", fail_at_step=2)
    ids = backend.submit([slow, failing])
    assert len(set(ids)) == 2 and all(i.startswith("ray:") for i in ids)
    jobs = [Job(ids[0], slow), Job(ids[1], failing)]
    wait_for(lambda: backend.poll(jobs)[1].state == DONE, what="the failing run")
    end = events(failing)[-1]
    assert end["event"] == "end" and end["status"] == "FAILED" and "fail_at_step" in end["traceback"]
    wait_for(lambda: sum(e["event"] == "metrics" for e in events(slow)) >= 2, what="the slow run to log")
    assert backend.poll(jobs)[0].state == "RUNNING"
    backend.cancel([jobs[0]])
    assert backend.poll(jobs)[0].state == DONE
    end = events(slow)[-1]
    assert end["event"] == "end" and end["status"] == "KILLED"
    assert sum(e["event"] == "metrics" for e in events(slow)) < 400
    # another orch process (no object refs) judges by the journal: ended -> DONE, never started -> LOST
    other = RayBackend()
    never = smoke_dir(tmp_path, "never")
    assert [s.state for s in other.poll([jobs[1], Job("ray:x", never)])] == [DONE, LOST]


def test_submit_to_a_ray_start_cluster(store, ray_local, monkeypatch):
    """`ray start --head` on 127.0.0.1 with its own RAY_TMPDIR; `orch submit --backend ray --ray-address auto`
    finds it through the same RAY_TMPDIR (docs/ray.md), not the session's Ray."""
    port = free_port()
    cluster_tmp = Path(tempfile.mkdtemp(prefix="orch-rc-", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(cluster_tmp))  # for the head and the orch process started below
    # SIGTERM drains a `ray start --block` node for 30 s by default; a test cluster stops at once
    env = {**os.environ, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
    ray_cli = str(Path(sys.executable).parent / "ray")
    head = subprocess.Popen(
        [
            ray_cli,
            "start",
            "--head",
            "--block",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--include-dashboard=false",
            "--disable-usage-stats",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 90, "the Ray head to listen")
        spec = store.spec(
            {
                "name": "on_cluster",
                "workload": "smoke",
                "params": {"steps": 6, "noise": 0.3},
                "seeds": 2,
                "backend": "ray",
                "resources": {"cpus": 1, "mem_gb": 0.5},
            }
        )
        wait_for(lambda: (cluster_tmp / "ray" / "ray_current_cluster").exists(), 30, "the cluster's address file")
        proc = store.orch_process("submit", str(spec), "--ray-address", "auto")
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out

        # on a cluster orch submit returns once a detached driver submitted the runs (tests/test_ray_cluster.py)
        def settled():
            store.orch("status", "on_cluster", check=True)
            runs = store.seed_runs("on_cluster")
            return runs if runs and all(r.status in ("FINISHED", "FAILED", "KILLED") for r in runs) else None

        wait_for(settled, 180, "the runs on the cluster to end", every=1.0)
        results = seed_results(store, "on_cluster")
        assert {k: v[0] for k, v in results.items()} == {"0": "FINISHED", "1": "FINISHED"}
        # the driver and its tasks ran on that cluster: its session logs hold them, not a private local Ray
        logs = next(cluster_tmp.glob("ray/session_*/logs"))
        assert list(logs.glob("python-core-driver-*")) and list(logs.glob("python-core-worker-*"))
    finally:
        stop_group(head)
        shutil.rmtree(cluster_tmp, ignore_errors=True)


def test_a_run_no_node_can_hold_is_refused_before_submission(store, ray_local):
    spec = store.spec(
        {"name": "too_big", "workload": "smoke", "backend": "ray", "resources": {"cpus": 64, "mem_gb": 0.5}}
    )
    result = store.orch("submit", str(spec))
    assert result.exit_code == 2, result.output
    assert "resources" in result.output and "CPU=64" in result.output and "largest node has CPU=2" in result.output
    assert store.seed_runs("too_big") == []
