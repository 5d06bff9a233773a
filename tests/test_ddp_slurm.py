"""Multi-task runs on the two-node dev Slurm (cluster/dev/start-slurm.sh: n1 and n2 on this host, gloo on the
CPU): the job script's task layout, looped_tf on 2 nodes x 1 task and on 1 node x 2 tasks (one MLflow run,
one row per step, equal to the one-process run within float tolerance), a time-limit requeue (SIGUSR2) of a
2-task job resuming both ranks from the same step, and docs/distributed.md's DDP script as a command."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import ORCH, REPO
from test_ddp_local import REL, TINY, doc_files, history
from test_slurm import dev_slurm, status_until, wait_for

from orchestrator.backends.slurm import SlurmBackend
from orchestrator.backends.slurm_profile import ClusterProfile
from orchestrator.errors import InputError
from orchestrator.job import worker
from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run
from orchestrator.spec.spec import Resources
from orchestrator.tracking.records import Tag

SLURM = ["--backend", "slurm", "--cluster", "local-slurm"]


@pytest.fixture(scope="session")
def slurm():
    yield from dev_slurm()


def reference(tmp_path: Path, params: dict, seed: int = 0) -> tuple[list[tuple[int, float]], dict]:
    """The same run as one process, in this process: its train_loss curve and final metrics."""
    run_dir = RunDir(tmp_path / "reference")
    run_dir.create(
        {"run": Run("looped_tf", params, seed, "base").to_dict(), "run_id": "x", "cpus": 1, "system_metrics_s": 0}
    )
    assert worker.execute(run_dir.path) == "FINISHED"
    records, _ = read_journal(run_dir.journal)
    curve = [(r["step"], r["metrics"]["train_loss"]) for r in records if "train_loss" in r.get("metrics", {})]
    return curve, next(r for r in records if r["event"] == "end")["final"]


def close(curve: list[tuple[int, float]], expected: list[tuple[int, float]]) -> bool:
    return [s for s, _ in curve] == [s for s, _ in expected] and all(
        v == pytest.approx(w, rel=REL) for (_, v), (_, w) in zip(curve, expected, strict=True)
    )


def spec_for(store, name: str, resources: dict, **params):
    return store.spec(
        {
            "name": name,
            "workload": "looped_tf",
            "params": {**TINY, **params},
            "resources": resources,
            "tracking": {"system_metrics_s": 0},
        },
        name=f"{name}.yaml",
    )


def sbatch_lines(profile: ClusterProfile, resources: Resources) -> list[str]:
    script = SlurmBackend(profile, resources).job_script(1)
    return [line for line in script.splitlines() if line.startswith("#SBATCH")]


# -- no Slurm needed ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "form, gpu_line", [("gres", "--gres=gpu:4"), ("gpus-per-node", "--gpus-per-node=4"), ("gpus", "--gpus=8")]
)
def test_the_job_script_carries_the_task_layout_and_the_gpus_per_node(form, gpu_line):
    lines = sbatch_lines(ClusterProfile(name="site", gpu_request=form), Resources(nodes=2, gpus_per_node=4, cpus=8))
    for line in ("--nodes=2", "--ntasks-per-node=4", "--cpus-per-task=8", gpu_line, "--mem=16384M"):
        assert f"#SBATCH {line}" in lines, lines


def test_the_profile_limits_are_a_nodes():
    profile = ClusterProfile(name="site", limits={"gpus": 4, "nodes": 2, "cpus": 16, "mem_gb": 64})
    profile.check(Resources(nodes=2, gpus_per_node=4, cpus=4, mem_gb=16))
    for resources, field in (
        (Resources(nodes=3, gpus_per_node=4), "resources.nodes"),
        (Resources(nodes=2, gpus_per_node=8), "resources.gpus_per_node"),
        (Resources(nodes=2, gpus_per_node=4, cpus=8), "resources.cpus"),
        (Resources(nodes=2, gpus_per_node=4, mem_gb=32), "resources.mem_gb"),
    ):
        with pytest.raises(InputError, match="limits") as err:
            profile.check(resources)
        assert err.value.field == field


# -- against the dev Slurm ---------------------------------------------------------------------------
def test_dry_run_shows_the_layout_and_creates_nothing(slurm, store):
    spec = spec_for(store, "dd_dry", {"nodes": 2})
    out = " ".join(store.orch("submit", str(spec), *SLURM, "--dry-run", check=True).output.split())
    assert "#SBATCH --nodes=2" in out and "#SBATCH --ntasks-per-node=1" in out and "2 ranks" in out, out
    assert "sbatch --test-only: " in out and "refused" not in out
    assert store.ledger().experiment_id("dd_dry") is None


def test_looped_tf_on_two_nodes_and_on_two_tasks_equals_the_one_process_run(slurm, store, tmp_path):
    expected_curve, expected_final = reference(tmp_path, {**TINY})
    for name, resources in (("dd_nodes", {"nodes": 2}), ("dd_tasks", {"tasks_per_node": 2})):
        store.orch("submit", str(spec_for(store, name, resources)), *SLURM, "--wait", check=True)
        (run,) = store.seed_runs(name)
        assert run.status == "FINISHED", run.tags.get(Tag.ERROR)
        assert close(history(store, run, "train_loss"), expected_curve)  # one row per step, the same numbers
        assert run.metrics["final_err"] == pytest.approx(expected_final["final_err"], rel=REL)
        run_dir = RunDir(Path(run.tags[Tag.RUN_DIR]))
        (end,) = run_dir.ranks.glob("*/rank1.json")
        assert json.loads(end.read_text())["status"] == "FINISHED"
        assert (run_dir.path / "stderr.rank1.log").exists()
    nodes = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "NodeList", "-j", store.seed_runs("dd_nodes")[0].tags[Tag.JOB_ID]],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert nodes == ["n[1-2]"], nodes  # the 2-node job held both nodes


@pytest.mark.slow
def test_a_requeued_two_task_job_resumes_both_ranks_from_the_same_step(slurm, store, tmp_path):
    params = {"steps": 120, "checkpoint_every": 10, "log_every": 10}
    spec = spec_for(store, "dd_requeue", {"tasks_per_node": 2}, **params)
    store.orch("submit", str(spec), *SLURM, check=True)
    (run,) = store.seed_runs("dd_requeue")
    run_dir = RunDir(Path(run.tags[Tag.RUN_DIR]))
    wait_for(
        lambda: any(r["event"] == "checkpoint" and r["step"] >= 29 for r in read_journal(run_dir.journal)[0]),
        what="a checkpoint at step 29",
    )
    subprocess.run(["scancel", "--signal=USR2", run.tags[Tag.JOB_ID]], check=True)
    (done,) = status_until(store, "dd_requeue", {"FINISHED", "FAILED", "KILLED"}, timeout=300)
    assert done.status == "FINISHED" and done.run_id == run.run_id, done.tags.get(Tag.ERROR)
    records = read_journal(run_dir.journal)[0]
    kinds = [r["event"] for r in records]
    assert kinds.count("start") == 2 and "requeue" in kinds, kinds
    resumed = [r for r in records if r["event"] == "start"][1]["resumed_from_step"]
    assert resumed is not None and resumed >= 29
    ends = {p.parent.name: json.loads(p.read_text())["status"] for p in run_dir.ranks.glob("*/rank1.json")}
    assert sorted(ends.values()) == ["FINISHED", "REQUEUE"], ends  # rank 1 stopped with the job, then resumed
    expected_curve, expected_final = reference(tmp_path, {**TINY, **params})
    assert close(history(store, done, "train_loss"), expected_curve)
    assert done.metrics["final_err"] == pytest.approx(expected_final["final_err"], rel=REL)


def test_the_docs_ddp_script_runs_on_two_slurm_nodes(slurm, store):
    import yaml

    doc = yaml.safe_load(doc_files(store.root)["ddp.yaml"])
    spec = store.spec({**doc, "resources": {"nodes": 2}, "tracking": {"system_metrics_s": 0}}, name="ddp.yaml")
    done = subprocess.run(  # from the script's directory: a command's code snapshot is its working directory
        [*ORCH, "submit", str(spec), *SLURM, "--wait", "--tracking-uri", store.uri],
        cwd=store.root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = store.seed_runs("ddp")
    assert run.status == "FINISHED" and run.metrics["world_size"] == 2, run.tags.get(Tag.ERROR)
    assert sorted({s for s, _ in history(store, run, "loss")}) == list(range(20))
    run_dir = RunDir(Path(run.tags[Tag.RUN_DIR]))
    assert "rank 1 of 2" in (run_dir.path / "stdout.rank1.log").read_text()


def test_a_rank_killed_mid_run_on_slurm_fails_the_run_and_the_next_submit_resumes_it(slurm, store):
    """SIGKILL to rank 1 of a 2-task job while it trains: the run ends FAILED (not FINISHED, not hanging on
    a collective), with an error, and a resubmit continues it from its checkpoint to the end."""
    import psutil

    params = {"steps": 100000, "checkpoint_every": 5, "log_every": 5}
    spec = spec_for(store, "dd_kill", {"tasks_per_node": 2}, **params)
    store.orch("submit", str(spec), *SLURM, check=True)
    (run,) = store.seed_runs("dd_kill")
    run_dir = RunDir(Path(run.tags[Tag.RUN_DIR]))
    wait_for(lambda: any(r["event"] == "checkpoint" for r in read_journal(run_dir.journal)[0]), what="a checkpoint")
    job = run.tags[Tag.JOB_ID].split("_")[0]

    def rank1_python():
        for proc in psutil.process_iter(["name", "environ"]):
            env = proc.info["environ"] or {}
            if env.get("SLURM_JOB_ID") == job and env.get("SLURM_PROCID") == "1" and "python" in proc.info["name"]:
                return proc
        return None

    victim = wait_for(rank1_python, what="rank 1's process")
    victim.kill()
    (ended,) = status_until(store, "dd_kill", {"FINISHED", "FAILED", "KILLED"}, timeout=300)
    assert ended.status == "FAILED", (ended.status, ended.tags.get(Tag.ERROR))
    assert ended.tags.get(Tag.ERROR), ended.tags
    logs = store.orch("logs", ended.run_id, check=True).output
    assert "rank" in logs.lower()
