"""A multi-task run (torch.distributed, gloo on the CPU) on the local backend: the spec's task layout and its
refusals, looped_tf data-parallel on 1 node x 2 tasks (one MLflow run, one row per step, reruns identical,
equal to the one-process run within float tolerance), a rank killed mid-run failing the run with that rank
named, and docs/distributed.md's DDP script run as a command exactly as written."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import yaml
from conftest import ORCH, REPO
from support import submitting, wait_for

from orchestrator.errors import InputError
from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import expand
from orchestrator.spec.spec import Resources, load_spec
from orchestrator.tracking.records import Tag

TINY = {
    "n_dims": 3,
    "n_points": 7,
    "n_embd": 16,
    "n_head": 2,
    "n_loops": 4,
    "loop_window": 2,
    "batch_size": 16,
    "eval_prompts": 64,
    "bootstrap_trials": 50,
    "eval_every": 0,
    "eval_horizon": 8,
    "log_every": 5,
    "steps": 20,
    "checkpoint_every": 10,
}
REL = 1e-5  # float32 sums over 2 x 8 prompts vs 16: measured differences are ~1e-7 relative


def looped(store, name: str, tasks: int, system_metrics_s: float = 0, **params) -> Path:
    return store.spec(
        {
            "name": name,
            "workload": "looped_tf",
            "params": {**TINY, **params},
            "resources": {"tasks_per_node": tasks},
            "tracking": {"system_metrics_s": system_metrics_s},
        },
        name=f"{name}.yaml",
    )


def history(store, run, metric: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in store.ledger().client.get_metric_history(run.run_id, metric))


# -- the spec ------------------------------------------------------------------------------------------
def test_the_task_layout_defaults_and_refusals():
    assert Resources().world_size == 1 and Resources().layout == 1
    gpu = Resources(nodes=2, gpus_per_node=4)
    assert (gpu.layout, gpu.world_size, gpu.task_gpus) == (4, 8, 1.0)  # one task per GPU by default
    assert Resources(gpus_per_node=4, tasks_per_node=2).task_gpus == 2.0
    cpu = Resources(nodes=2)
    assert (cpu.layout, cpu.world_size, cpu.task_gpus) == (1, 2, 0)
    for bad, words in (
        ({"gpus": 1, "gpus_per_node": 2}, "both set"),
        ({"gpus_per_node": 2, "tasks_per_node": 3}, "must divide"),
        ({"tasks_per_node": 2, "runs_per_job": 2}, "runs_per_job"),
    ):
        with pytest.raises(ValueError, match=words):
            Resources(**bad)


def test_the_task_layout_is_not_part_of_the_run_key(store):
    one = load_spec(looped(store, "k", 1))
    two = load_spec(looped(store, "k", 2))
    assert [r.key for r in expand(one)] == [r.key for r in expand(two)]


@pytest.mark.parametrize(
    "resources, field, words",
    [
        ({"tasks_per_node": 2, "runs_per_job": 2}, "resources", "runs_per_job"),
        ({"nodes": 2}, "resources.nodes", "one machine"),
        ({"tasks_per_node": 2, "cpus": 2}, "resources.tasks_per_node", "this machine has"),
        ({"gpus_per_node": 1}, "resources.gpus_per_node", "this machine has 0"),
    ],
)
def test_a_layout_the_local_backend_cannot_run_is_refused_with_nothing_created(store, resources, field, words):
    spec = store.spec({"name": "bad", "workload": "smoke", "resources": resources})
    result = store.orch("submit", str(spec))
    assert result.exit_code == 2, result.output
    assert field in result.output and words in " ".join(result.output.split()), result.output
    assert store.ledger().experiment_id("bad") is None and not (store.workdir / "bad").exists()


def test_orch_run_refuses_a_multi_task_spec(store):
    result = store.orch("run", str(looped(store, "r", 2)))
    assert result.exit_code == 2 and "orch submit" in " ".join(result.output.split()), result.output


# -- looped_tf, data-parallel ------------------------------------------------------------------------
def test_looped_tf_on_two_tasks_is_one_run_equal_to_the_one_process_run(store):
    for name, tasks in (("ddp_a", 2), ("ddp_b", 2), ("single", 1)):
        store.orch("submit", str(looped(store, name, tasks)), check=True)
    (a,), (b,), (single,) = (store.seed_runs(n) for n in ("ddp_a", "ddp_b", "single"))
    assert a.status == b.status == single.status == "FINISHED"
    assert a.tags[Tag.KEY] == single.tags[Tag.KEY]  # the same run, whatever its layout
    curve_a = history(store, a, "train_loss")
    assert [s for s, _ in curve_a] == [4, 9, 14, 19]  # one row per logged step, not one per rank
    assert curve_a == history(store, b, "train_loss") and a.metrics == b.metrics  # reruns: identical
    curve_1 = history(store, single, "train_loss")
    assert [s for s, _ in curve_1] == [s for s, _ in curve_a]
    for (_, x), (_, y) in zip(curve_a, curve_1, strict=True):
        assert x == pytest.approx(y, rel=REL)
    assert a.metrics["final_err"] == pytest.approx(single.metrics["final_err"], rel=REL)
    run_dir = RunDir(Path(a.tags[Tag.RUN_DIR]))
    (rank1,) = run_dir.ranks.glob("*/rank1.json")
    assert '"status": "FINISHED"' in rank1.read_text()
    starts = [r for r in read_journal(run_dir.journal)[0] if r["event"] == "start"]
    assert len(starts) == 1  # rank 1 journals nothing


@contextlib.contextmanager
def training_two_tasks(
    store, name: str, system_metrics_s: float = 0
) -> Iterator[tuple[subprocess.Popen, psutil.Process]]:
    """`orch submit` of a long 2-task looped_tf run as a real process (support.submitting: stopped at the end
    whatever the test did), once it logged a step; and rank 0."""
    spec = looped(store, name, 2, system_metrics_s, steps=100000, checkpoint_every=100000, log_every=1)
    with submitting(store, spec) as proc:
        journal = wait_for(lambda: next((store.workdir / name).glob("*/journal.jsonl"), None), 60, "the journal")
        wait_for(lambda: any(r["event"] == "metrics" for r in read_journal(journal)[0]), 60, "the first step")
        yield proc, psutil.Process(next(r for r in read_journal(journal)[0] if r["event"] == "start")["pid"])


def test_a_rank_killed_mid_run_fails_the_run_naming_it(store):
    with training_two_tasks(store, "ddp_kill") as (proc, rank0):
        (rank1,) = [p for p in rank0.parent().children() if p.pid != rank0.pid]
        rank1.send_signal(signal.SIGKILL)
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 1, out
        (run,) = store.seed_runs("ddp_kill")
        assert run.status == "FAILED" and run.tags[Tag.ERROR].startswith("rank 1: rank 1 killed by SIGKILL"), run.tags
        logs = store.orch("logs", run.run_id, check=True).output
        assert "rank 1 killed by SIGKILL" in logs and "stderr.rank1.log" in logs


# -- a DDP script as a command, exactly as docs/distributed.md shows it ------------------------------
def doc_files(tmp: Path) -> dict[str, str]:
    text = (REPO / "docs" / "distributed.md").read_text()
    section = text[text.index("## A DDP script as a command") :]
    files = {}
    for body in re.findall(r"```(?:python|yaml)\n(.*?)```", section, re.S):
        name = body.splitlines()[0][2:]
        (tmp / name).write_text(body)
        files[name] = body
    return files


def test_the_docs_ddp_script_runs_unchanged_as_a_two_task_command(store):
    files = doc_files(store.root)
    assert set(files) == {"ddp_train.py", "ddp.yaml"}
    doc = yaml.safe_load(files["ddp.yaml"])
    spec = store.spec({**doc, "tracking": {"system_metrics_s": 0}}, name="ddp.yaml")
    done = subprocess.run(
        [*ORCH, "submit", str(spec), "--tracking-uri", store.uri],
        cwd=store.root,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = store.seed_runs("ddp")
    assert run.status == "FINISHED" and run.metrics["world_size"] == 2
    loss = history(store, run, "loss")
    steps = [s for s, _ in loss]  # rank 1's lines are not recorded: one row per step (the final sits on the last)
    assert sorted(set(steps)) == list(range(20)) and all(steps.count(s) == 1 for s in range(19)), steps
    run_dir = RunDir(Path(run.tags[Tag.RUN_DIR]))
    assert "rank 0 of 2" in run_dir.stdout.read_text()
    assert "rank 1 of 2" in (run_dir.path / "stdout.rank1.log").read_text()
    assert len((run_dir.path / "metrics.rank1.jsonl").read_text().splitlines()) == 21  # 20 steps + final
    assert loss[-1][1] < loss[0][1]
    with pytest.raises(InputError):  # the script's layout cannot be packed
        load_spec(store.spec({**doc, "resources": {"tasks_per_node": 2, "runs_per_job": 2}}, name="packed.yaml"))


def test_tune_and_a_replayed_schedule_refuse_a_multi_task_spec(store):
    """A trial is one process reporting to Ray, and a schedule switches params on rank 0's checkpoints only:
    both refused with the field to change, before anything starts."""
    spec = looped(store, "ddp_tune", 2, steps=10)
    doc = yaml.safe_load(spec.read_text())
    doc["tune"] = {"space": {"lr": {"loguniform": [1e-4, 1e-2]}}, "num_samples": 2}
    spec.write_text(yaml.safe_dump(doc))
    result = store.orch("tune", str(spec))
    assert result.exit_code == 2 and "resources" in result.output and "one process" in result.output, result.output
    doc.pop("tune")
    doc["schedule"] = [{"step": 5, "params": {"lr": 1e-3}}]
    spec.write_text(yaml.safe_dump(doc))
    result = store.orch("submit", str(spec))
    assert result.exit_code == 2 and "schedule" in result.output, result.output
    assert store.ledger().experiment_id("ddp_tune") is None


def test_ranks_die_with_their_supervisor_however_it_dies(store):
    """SIGKILL to the supervisor of a 2-task run (what a cancel's last resort sends): its ranks do not train on
    alone holding cores (the kernel kills them: PR_SET_PDEATHSIG)."""
    with training_two_tasks(store, "ddp_orphan") as (proc, rank0):
        supervisor = rank0.parent()
        ranks = supervisor.children()
        assert len(ranks) == 2
        supervisor.kill()
        _, alive = psutil.wait_procs(ranks, timeout=30)
        assert not alive, [p.pid for p in alive]
        out, _ = proc.communicate(timeout=120)
        (run,) = store.seed_runs("ddp_orphan")
        assert run.status in ("FAILED", "KILLED"), (run.status, out)


def test_the_system_metrics_of_a_local_multi_task_run_count_every_rank(store):
    """Rank 0 samples its ranks' supervisor and everything under it, not its own process alone: the run's
    memory is both ranks' (and the supervisor's), and its CPU time theirs."""
    with training_two_tasks(store, "ddp_sys", system_metrics_s=1) as (proc, rank0):
        journal = next((store.workdir / "ddp_sys").glob("*/journal.jsonl"))
        sample = wait_for(  # past the first samples, taken while the ranks were still building their model
            lambda: next((r for r in read_journal(journal)[0] if r["event"] == "system" and r["step"] >= 3), None),
            60,
            "a system sample",
        )
        own_mb = rank0.memory_info().rss / 2**20
        # 2 ranks and their supervisor (rank 0 alone: 1.0x; forked pages are counted in each)
        assert sample["metrics"]["system/rss_mb"] > 1.4 * own_mb, (sample, own_mb)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
        totals = [r for r in read_journal(journal)[0] if r["event"] == "system" and "system/cpu_s" in r["metrics"]]
        assert totals and totals[-1]["metrics"]["system/cpu_s"] > 0
