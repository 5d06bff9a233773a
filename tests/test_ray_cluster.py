"""Ray as the lab meets it: packed runs, the time limit, and a multi-node Ray cluster on 127.0.0.1 (`ray start`
nodes, each its own raylet) whose runs outlive `orch submit` (a detached driver), survive the death of the node
they ran on (Ray retries the task, the run resumes from its checkpoint), are cancelled from another process,
and share one GPU by fractions."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from support import free_port, stop_group, wait_for
from test_ray_backend import events, seed_results, smoke_dir
from test_slurm import uninterrupted

from orchestrator.backends.base import DONE, Job
from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.tracking.records import Tag

pytestmark = pytest.mark.ray


def test_packed_runs_on_ray_equal_the_local_backend(store, ray_local):
    doc = {
        "name": "pack_local",
        "workload": "smoke",
        "params": {"steps": 8, "noise": 0.3},
        "seeds": 4,
        "resources": {"cpus": 1, "mem_gb": 0.25},
    }
    store.orch("submit", str(store.spec(doc, "local.yaml")), check=True)
    packed = {**doc, "name": "pack_ray", "backend": "ray", "resources": {**doc["resources"], "runs_per_job": 2}}
    store.orch("submit", str(store.spec(packed, "ray.yaml")), check=True)
    local, on_ray = seed_results(store, "pack_local"), seed_results(store, "pack_ray")
    assert set(local) == {"0", "1", "2", "3"} and local == on_ray
    job_ids = [r.tags[Tag.JOB_ID] for r in store.seed_runs("pack_ray")]
    assert len(set(job_ids)) == 2  # 4 runs, 2 per task
    for record in store.seed_runs("pack_ray"):  # each its own run directory, journal and logs
        run_dir = RunDir(Path(record.tags[Tag.RUN_DIR]))
        assert [e["event"] for e in events(run_dir)].count("start") == 1 and run_dir.stdout.exists()


def test_the_time_limit_is_enforced_on_ray(tmp_path, ray_local):
    from orchestrator.backends.ray import RayBackend

    backend = RayBackend(mem_gb=0.25, time_limit_s=2)
    slow = smoke_dir(tmp_path, "slow", steps=400, sleep_s=0.05)
    (job_id,) = backend.submit([slow])
    wait_for(lambda: backend.poll([Job(job_id, slow)])[0].state == DONE, 60, "the time limit to stop the run")
    end = events(slow)[-1]
    assert end["event"] == "end" and end["status"] == "KILLED" and "time limit reached" in end["error"]
    assert sum(e["event"] == "metrics" for e in events(slow)) < 400


# -- a Ray cluster of several nodes on this host ----------------------------------------------------
class Cluster:
    """`ray start --block` processes on 127.0.0.1 sharing one RAY_TMPDIR: a head with no CPU (so runs go to
    worker nodes) and worker nodes added and killed by the test."""

    def __init__(self, tmp: Path):
        self.port = free_port()
        self.tmp = tmp
        self.env = {**os.environ, "RAY_TMPDIR": str(tmp), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"}
        self.ray = str(Path(sys.executable).parent / "ray")
        self.nodes: list[subprocess.Popen] = []
        self.last_error = ""

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *args: str, head: bool = False) -> subprocess.Popen:
        where = (
            ["--head", f"--port={self.port}", "--include-dashboard=false", "--disable-usage-stats"]
            if head
            else [f"--address={self.address}"]
        )
        log = open(  # noqa: SIM115 - the Ray node writes to it while it runs
            self.tmp.parent / f"{self.tmp.name}-node{len(self.nodes)}.log", "ab"
        )  # kept for a failure
        proc = subprocess.Popen(
            [self.ray, "start", "--block", *where, "--node-ip-address=127.0.0.1", *args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.nodes.append(proc)
        return proc

    def alive_nodes(self) -> list[dict]:
        script = (
            f"import ray, json; ray.init(address='{self.address}', logging_level='ERROR'); "
            "print(json.dumps([n['Resources'] for n in ray.nodes() if n['Alive']]))"
        )
        proc = subprocess.run([sys.executable, "-c", script], env=self.env, capture_output=True, text=True, timeout=120)
        self.last_error = proc.stderr[-1500:]
        return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else []

    def stop(self) -> None:
        for proc in reversed(self.nodes):
            stop_group(proc)


@pytest.fixture
def cluster(ray_local, monkeypatch):
    tmp = Path(tempfile.mkdtemp(prefix="orch-rc-", dir="/tmp"))
    monkeypatch.setenv("RAY_TMPDIR", str(tmp))
    c = Cluster(tmp)
    c.start("--num-cpus=0", head=True)

    def listening() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", c.port)) == 0

    try:
        wait_for(listening, 90, "the Ray head to listen")
        yield c
    finally:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.slow
def test_runs_outlive_submit_survive_a_dead_node_are_cancelled_from_another_shell_and_share_a_gpu(store, cluster):
    first = cluster.start("--num-cpus=2")
    try:
        wait_for(lambda: len(cluster.alive_nodes()) == 2, 120, "the first worker node to join")
    except AssertionError:
        logs = "\n".join(
            p.read_text()[-1500:] for p in sorted(cluster.tmp.parent.glob(f"{cluster.tmp.name}-node*.log"))
        )
        raise AssertionError(f"{cluster.last_error}\n{logs}") from None
    params = {"steps": 160, "sleep_s": 0.25, "noise": 0.2}  # 40 s: still running when its node dies
    spec = store.spec(
        {
            "name": "detached",
            "workload": "smoke",
            "params": params,
            "seeds": 2,
            "backend": "ray",
            "resources": {"cpus": 1, "mem_gb": 0.25},
        }
    )
    proc = store.orch_process("submit", str(spec), "--ray-address", cluster.address)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    runs = store.seed_runs("detached")  # orch submit has exited: the runs go on without it
    assert len(runs) == 2 and all(r.tags[Tag.JOB_ID].startswith("raydrv:") for r in runs)
    dirs = [RunDir(Path(r.tags[Tag.RUN_DIR])) for r in runs]
    wait_for(
        lambda: all(any(e["event"] == "checkpoint" and e["step"] >= 3 for e in events(d)) for d in dirs),
        120,
        "both runs to checkpoint on the first node",
    )
    # a second node joins, the first dies (SIGKILL: a node failure says nothing): Ray retries the tasks on the
    # second node and each run resumes from its checkpoint
    cluster.start("--num-cpus=2", "--num-gpus=1")
    wait_for(lambda: len(cluster.alive_nodes()) == 3, 120, "the second worker node to join")
    assert not any(e["event"] == "end" for d in dirs for e in events(d))
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()

    def settled():
        store.orch("status", "detached", check=True)
        found = store.seed_runs("detached")
        return found if all(r.status in ("FINISHED", "FAILED", "KILLED") for r in found) else None

    final = wait_for(settled, 300, "the runs to end on the second node", every=2.0)
    assert {r.status for r in final} == {"FINISHED"}, {r.run_id: r.tags.get(Tag.ERROR) for r in final}
    for run_dir in dirs:
        starts = [e for e in read_journal(run_dir.journal)[0] if e["event"] == "start"]
        assert len(starts) == 2 and starts[1]["resumed_from_step"] >= 3
    for record in final:  # the same numbers as a run never interrupted
        seed = int(record.tags[Tag.SEED])
        expected_final, expected_curve = uninterrupted(store.root / f"ref{seed}", params, seed)
        assert record.metrics["final_loss"] == expected_final
        history = store.ledger().client.get_metric_history(record.run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == expected_curve

    # cancelled from this shell while the detached driver runs it
    slow = store.spec(
        {
            "name": "detached_cancel",
            "workload": "smoke",
            "params": {"steps": 400, "sleep_s": 0.1},
            "backend": "ray",
            "resources": {"cpus": 1, "mem_gb": 0.25},
        },
        name="cancel.yaml",
    )
    assert store.orch("submit", str(slow), "--ray-address", cluster.address).exit_code == 0
    (run,) = store.seed_runs("detached_cancel")
    run_dir = RunDir(Path(run.tags[Tag.RUN_DIR]))
    wait_for(lambda: any(e["event"] == "metrics" for e in events(run_dir)), 120, "the slow run to start")
    assert "cancelled 1 run(s)" in store.orch("cancel", "detached_cancel", check=True).output
    (run,) = store.seed_runs("detached_cancel")
    assert run.status == "KILLED" and events(run_dir)[-1]["status"] == "KILLED"

    # two runs share the second node's one GPU (gpus: 0.5); it is fake, so each refuses to train on the CPU
    gpu = store.spec(
        {
            "name": "detached_gpu",
            "workload": "smoke",
            "params": {"steps": 2},
            "seeds": 2,
            "backend": "ray",
            "resources": {"cpus": 1, "gpus": 0.5, "mem_gb": 0.25},
        },
        name="gpu.yaml",
    )
    # (a process of its own: this one's Ray is the session's, which has no GPU to check the request against)
    proc = store.orch_process("submit", str(gpu), "--ray-address", cluster.address)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out

    def gpu_settled():
        store.orch("status", "detached_gpu", check=True)
        found = store.seed_runs("detached_gpu")
        return found if all(r.status in ("FINISHED", "FAILED", "KILLED") for r in found) else None

    gpu_runs = wait_for(gpu_settled, 180, "the GPU runs to end", every=2.0)
    assert {r.status for r in gpu_runs} == {"FAILED"}
    assert all("no CUDA device" in r.tags[Tag.ERROR] for r in gpu_runs)
    assert {r.tags[Tag.CUDA_VISIBLE] for r in gpu_runs} == {"0"}  # Ray gave both the same GPU
