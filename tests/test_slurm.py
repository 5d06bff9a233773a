"""The Slurm backend against the real dev Slurm (munge, slurmctld, two slurmd, slurmdbd + MariaDB; JobRequeue=0),
started by cluster/dev/start-slurm.sh for this session and stopped by stop-slurm.sh after it (unless it
was already running). Every submission gets a fresh submitit folder (a new token), so job ids that
restart at 1 on a fresh Slurm state never return old results.

Covered: a 4-seed array equal to the local backend, a failing run among others, requeue on SIGUSR2
resuming the same MLflow run from its checkpoint (on a cluster with JobRequeue=0: orch submits --requeue),
a requeue Slurm refuses (profile requeue: false), orch cancel, sacct down -> squeue, an impossible
request, and orch killed between sbatch and recording the job ids (or before sbatch)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import support

from orchestrator.backends.base import DONE, PENDING, RUNNING, Job
from orchestrator.backends.slurm import SlurmBackend
from orchestrator.backends.slurm_profile import ClusterProfile, Limits, load_profile
from orchestrator.backends.slurm_states import expand_job_ids, parse_accounting, read_record, rss_mb, to_job_state
from orchestrator.errors import InputError
from orchestrator.job import worker
from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run
from orchestrator.spec.spec import Resources

REPO = Path(__file__).resolve().parent.parent
DEV = REPO / "cluster" / "dev"
SLURM = ["--backend", "slurm", "--cluster", "local-slurm"]


# -- the dev cluster ---------------------------------------------------------------------------------
def _slurm_up() -> bool:
    try:
        return subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10).returncode == 0
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False


@pytest.fixture(scope="session")
def slurm():
    yield from dev_slurm()


def dev_slurm():
    """A running dev Slurm (the body of the ``slurm`` fixture, which tests/test_slurm_cluster.py shares).
    Starting it needs root (it installs packages): without, this fails, it does not skip, so a CI that
    cannot run Slurm says so."""
    already = _slurm_up()
    if not already:
        if os.geteuid() != 0:
            pytest.fail("the Slurm tests need the dev cluster: run cluster/dev/start-slurm.sh as root first")
        subprocess.run([str(DEV / "start-slurm.sh")], check=True, timeout=600)

    # start-slurm.sh also restarts what a test stopped (slurmdbd): idempotent
    def restart():
        proc = subprocess.run([str(DEV / "start-slurm.sh")], timeout=120, capture_output=True, text=True)
        assert proc.returncode == 0, f"start-slurm.sh failed:\n{proc.stdout}\n{proc.stderr}"

    yield restart
    if not already:
        subprocess.run([str(DEV / "stop-slurm.sh")], check=False, timeout=120)


def wait_for(predicate, timeout: float = 90.0, what: str = "condition", every: float = 0.3):
    """Slurm moves slower than a local process: a longer default wait, polled less often."""
    return support.wait_for(predicate, timeout, what, every)


def journals(workdir: Path, name: str) -> dict[str, list[dict]]:
    return {j.parent.name: read_journal(j)[0] for j in (workdir / name).glob("*/journal.jsonl")}


def events(records: list[dict]) -> list[str]:
    return [r["event"] for r in records]


def queued_names() -> list[str]:
    out = subprocess.run(["squeue", "--me", "-h", "-r", "-o", "%j"], capture_output=True, text=True).stdout
    return out.split()


def statuses(store, name: str) -> dict[int, str]:
    return {int(r.tags["orch.seed"]): r.status for r in store.seed_runs(name)}


def status_until(store, name: str, done: set[str], timeout: float = 120.0):
    """`orch status` (which ingests journals and asks Slurm) until every run is in ``done``."""

    def settled():
        store.orch("status", name, check=True)
        runs = store.seed_runs(name)
        return runs if runs and all(r.status in done for r in runs) else None

    return wait_for(settled, timeout, f"{name}: all runs in {done}", every=1.0)


# -- no Slurm needed ---------------------------------------------------------------------------------
def test_sacct_accounting_parses_with_the_steps_memory_peak():
    text = (
        "41_0|00:00:12|COMPLETED|0:0|node1|billing=1,cpu=1,mem=4G,node=1|\n"
        "41_0.batch|00:00:12|COMPLETED|0:0|node1|cpu=1,mem=4G,node=1|123456K\n"
        "41_0.extern|00:00:12|COMPLETED|0:0|node1|billing=1,cpu=1,mem=4G,node=1|1024K\n"
        "41_1|00:01:02|OUT_OF_MEMORY|0:125|node2|cpu=1,mem=1G,node=1|\n"
        "41_1.batch|00:01:02|OUT_OF_MEMORY|0:125|node2|cpu=1,mem=1G,node=1|1.5G\n"
        "41_2|00:00:00|RUNNING|0:0|node1|cpu=1,mem=4G,node=1|\n"
        "99|00:00:01|COMPLETED|0:0|node1|cpu=1|\n"
    )
    found = parse_accounting(text, {"41_0", "41_1", "41_2"})
    assert set(found) == {"41_0", "41_1"}  # a running job has no accounting yet; 99 was not asked for
    assert found["41_0"]["max_rss_mb"] == "120.6" and found["41_0"]["elapsed"] == "00:00:12"
    assert found["41_1"]["state"] == "OUT_OF_MEMORY" and found["41_1"]["max_rss_mb"] == "1536.0"
    assert rss_mb("") == 0 and rss_mb("2048") == 2048 / 2**20 and rss_mb("3M") == 3


def test_job_ids_and_states_parse():
    assert expand_job_ids("12_3") == ["12_3"]
    assert expand_job_ids("12_[0-2,5%4]") == ["12_0", "12_1", "12_2", "12_5"]
    assert expand_job_ids("7") == ["7"]
    assert to_job_state("PENDING", "Priority").state == PENDING
    assert to_job_state("RUNNING", "None").state == RUNNING
    assert to_job_state("COMPLETED", "0:0") == to_job_state("COMPLETED", "None")
    assert to_job_state("COMPLETED", "0:0").state == DONE and to_job_state("COMPLETED", "0:0").reason is None
    oom = to_job_state("OUT_OF_MEMORY", "exit code 0:125")
    assert oom.state == DONE and "OUT_OF_MEMORY" in oom.reason and "0:125" in oom.reason
    assert "CANCELLED by 0" in to_job_state("CANCELLED by 0", "None").reason
    assert to_job_state("REQUEUED", "None").state == PENDING


def test_profiles_map_resources_and_refuse_the_impossible(tmp_path):
    plafrim = load_profile("plafrim")
    assert plafrim.own_jobs_only and plafrim.max_requeues >= 1 and plafrim.setup
    profile = ClusterProfile(
        name="gpu",
        partition="gpu",
        account="proj",
        gpu_type="a100",
        setup=["module load cuda"],
        limits=Limits(gpus=4, time_min=600),
        sbatch={"exclusive": True},
    )
    params = profile.slurm_parameters(Resources(cpus=4, gpus=2, mem_gb=8, time_min=120))
    assert params["gres"] == "gpu:a100:2" and params["cpus_per_task"] == 4 and params["mem"] == "8192M"
    assert params["partition"] == "gpu" and params["account"] == "proj" and params["time"] == 120
    assert params["setup"] == ["module load cuda"]
    assert params["additional_parameters"] == {"requeue": True, "exclusive": True}  # --requeue unless requeue: false
    with pytest.raises(InputError, match=r"limits\.gpus") as err:
        profile.check(Resources(gpus=8))
    assert err.value.field == "resources.gpus"
    with pytest.raises(InputError, match="has no GPU"):
        ClusterProfile(name="cpu", limits=Limits(gpus=0)).check(Resources(gpus=1))
    with pytest.raises(InputError, match=r"no cluster profile 'plafrm'.*did you mean 'plafrim'"):
        load_profile("plafrm")
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: x\narray_paralelism: 3\n")
    with pytest.raises(InputError, match="array_paralelism"):
        load_profile(str(bad))


def test_requeues_are_bounded_by_the_profile(tmp_path, monkeypatch):
    """submitit calls checkpoint() on SIGUSR2: it resubmits the same call and tells the worker a requeue
    is under way, until max_requeues restarts; then it declines (the run ends FAILED, saying why)."""
    from orchestrator.backends.slurm_job import SlurmRun

    job = SlurmRun(max_requeues=2)
    monkeypatch.setattr(worker, "_requeue_reason", None)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    again = job.checkpoint(str(tmp_path))
    assert again.function is job and again.args == (str(tmp_path),)
    assert "requeue 2 of at most 2" in worker._requeue_reason
    monkeypatch.setattr(worker, "_requeue_reason", None)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "2")
    assert job.checkpoint(str(tmp_path)) is None and worker._requeue_reason is None


# -- against the dev Slurm ---------------------------------------------------------------------------
SMOKE = {"workload": "smoke", "params": {"steps": 6, "noise": 0.1}}


@pytest.fixture(scope="module")
def array_run(slurm, tmp_path_factory):
    """One submission: 4 seeds of a good variant and 4 of a failing one, as job arrays (a profile with
    MaxArraySize 5 splits the 8 into 5 + 3), followed with --wait; and the 4 good seeds on the local backend."""
    from conftest import Store

    store = Store(tmp_path_factory.mktemp("array"))
    profile = store.root / "small-arrays.yaml"
    profile.write_text((REPO / "orchestrator" / "profiles" / "local-slurm.yaml").read_text() + "max_array_size: 5\n")
    spec = store.spec({"name": "sl_array", **SMOKE, "variants": {"ok": {}, "bad": {"fail_at_step": 3}}})
    submitted = store.orch(
        "submit", str(spec), "--seeds", "4", "--backend", "slurm", "--cluster", str(profile), "--wait"
    )
    local = store.spec({"name": "sl_local", **SMOKE}, name="local.yaml")
    store.orch("submit", str(local), "--seeds", "4", check=True)
    return store, submitted


def test_array_of_seeds_matches_the_local_backend(array_run):
    store, submitted = array_run
    runs = [r for r in store.seed_runs("sl_array") if r.tags["orch.variant"] == "ok"]
    assert len(runs) == 4 and {r.status for r in runs} == {"FINISHED"}, submitted.output
    job_ids = [r.tags["orch.job_id"] for r in store.seed_runs("sl_array")]
    arrays = sorted({j.split("_")[0] for j in job_ids}, key=int)
    assert len(arrays) == 2 and len(set(job_ids)) == 8  # 8 tasks split at MaxArraySize 5
    assert sorted(j.split("_")[1] for j in job_ids if j.startswith(arrays[0] + "_")) == ["0", "1", "2", "3", "4"]
    local = {int(r.tags["orch.seed"]): r for r in store.seed_runs("sl_local")}
    client = store.ledger().client
    for run in runs:
        twin = local[int(run.tags["orch.seed"])]
        assert run.metrics["final_loss"] == twin.metrics["final_loss"]
        curve = [(m.step, m.value) for m in client.get_metric_history(run.run_id, "loss")]
        assert sorted(curve) == sorted((m.step, m.value) for m in client.get_metric_history(twin.run_id, "loss"))
        assert len(curve) == 6


def test_each_ended_run_carries_slurms_accounting(array_run):
    store, _ = array_run

    def accounted():  # sacct's database lags a job's end by a moment: the next status fills it in
        store.orch("status", "sl_array")
        runs = store.seed_runs("sl_array")
        return runs if all("orch.sched.state" in r.tags for r in runs) else None

    for run in wait_for(accounted, 60, "sacct's accounting of every job"):
        tags = run.tags
        assert tags["orch.sched.state"] == "COMPLETED" and tags["orch.sched.exit_code"] == "0:0"
        assert re.fullmatch(r"(\d+-)?\d\d:\d\d:\d\d", tags["orch.sched.elapsed"])
        assert tags["orch.sched.nodes"] and "cpu=" in tags["orch.sched.alloc_tres"]
        assert float(tags["orch.sched.max_rss_mb"]) >= 0


def test_a_failing_run_is_failed_with_its_traceback_and_the_others_finish(array_run):
    store, submitted = array_run
    assert submitted.exit_code == 1  # some runs did not finish
    bad = [r for r in store.seed_runs("sl_array") if r.tags["orch.variant"] == "bad"]
    assert len(bad) == 4 and {r.status for r in bad} == {"FAILED"}
    client = store.ledger().client
    for run in bad:
        assert "failing at step 3" in run.tags["orch.error"]
        path = client.download_artifacts(run.run_id, "traceback.txt", str(store.root))
        assert "RuntimeError" in Path(path).read_text()
    logs = store.orch("logs", bad[0].run_id, check=True)
    assert "_log.err" in logs.output and "failing at step 3" in logs.output  # run log and Slurm log


def uninterrupted(tmp_path: Path, params: dict, seed: int) -> tuple[float, list[tuple[int, float]]]:
    run_dir = RunDir(tmp_path / "reference")
    run_dir.create(
        {"run": Run("smoke", params, seed, "base").to_dict(), "run_id": "x", "experiment_id": "0", "cpus": 1, "gpus": 0}
    )
    assert worker.execute(run_dir.path) == "FINISHED"
    records, _ = read_journal(run_dir.journal)
    curve = [(r["step"], r["metrics"]["loss"]) for r in records if r["event"] == "metrics"]
    return next(r for r in records if r["event"] == "end")["final"]["final_loss"], curve


@pytest.mark.slow
@pytest.mark.parametrize("how", ["usr2", "scontrol"])
def test_requeue_resumes_the_same_mlflow_run_from_its_checkpoint(slurm, store, tmp_path, how):
    """SIGUSR2 (what Slurm sends signal_delay_s before the time limit: submitit checkpoints and requeues)
    or `scontrol requeue` (SIGTERM, as a requeueing preemption): the run resumes in the same MLflow run."""
    params = {"steps": 24, "sleep_s": 0.25, "noise": 0.1}
    spec = store.spec({"name": "sl_requeue", "workload": "smoke", "params": params})
    store.orch("submit", str(spec), *SLURM, check=True)
    (run,) = store.seed_runs("sl_requeue")
    run_dir = RunDir(Path(run.tags["orch.run_dir"]))
    wait_for(
        lambda: any(r["event"] == "checkpoint" and r["step"] >= 4 for r in read_journal(run_dir.journal)[0]),
        what="the run to checkpoint a few steps",
    )
    job_id = run.tags["orch.job_id"]
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "Requeue=1" in shown  # --requeue, although this cluster's slurm.conf says JobRequeue=0
    command = ["scancel", "--signal=USR2", job_id] if how == "usr2" else ["scontrol", "requeue", job_id]
    subprocess.run(command, check=True)
    (final,) = status_until(store, "sl_requeue", {"FINISHED", "FAILED", "KILLED"})
    assert final.run_id == run.run_id and final.status == "FINISHED"
    assert len(store.seed_runs("sl_requeue")) == 1  # the same MLflow run continued, no second one
    records, _ = read_journal(run_dir.journal)
    assert events(records).count("start") == 2 and "requeue" in events(records)
    assert [r["status"] for r in records if r["event"] == "end"] == ["FINISHED"]  # no KILLED on the way
    assert final.tags["orch.restart_count"] == "1" and int(final.tags["orch.resumed_from_step"]) >= 4
    expected_final, expected_curve = uninterrupted(tmp_path, params, int(final.tags["orch.seed"]))
    assert final.metrics["final_loss"] == expected_final
    history = sorted((m.step, m.value) for m in store.ledger().client.get_metric_history(run.run_id, "loss"))
    assert history == expected_curve  # every step once, the same values as without the interruption


def test_orch_cancel_ends_running_and_queued_runs_killed(slurm, store):
    spec = store.spec({"name": "sl_cancel", "workload": "smoke", "params": {"steps": 400, "sleep_s": 0.1}})
    store.orch("submit", str(spec), "--seeds", "3", *SLURM, check=True)  # 2 cores: 2 run, 1 waits
    workdir = store.workdir
    wait_for(
        lambda: sum("start" in events(j) for j in journals(workdir, "sl_cancel").values()) >= 1, what="a run to start"
    )
    result = store.orch("cancel", "sl_cancel", check=True)
    assert "cancelled 3 run(s)" in result.output
    assert set(statuses(store, "sl_cancel").values()) == {"KILLED"}
    ids = {r.tags["orch.job_id"] for r in store.seed_runs("sl_cancel")}
    wait_for(
        lambda: (
            not ids
            & set(
                subprocess.run(
                    ["squeue", "--me", "-h", "-r", "-o", "%i"], capture_output=True, text=True
                ).stdout.split()
            )
        ),
        30,
        "the jobs to leave the queue",
    )
    for records in journals(workdir, "sl_cancel").values():
        assert records[-1]["event"] == "end" and records[-1]["status"] == "KILLED"

    def accounted():  # sacct's record says why each job ended: cancelled, by whom
        store.orch("status", "sl_cancel")
        runs = store.seed_runs("sl_cancel")
        return runs if all("orch.sched.state" in r.tags for r in runs) else None

    for run in wait_for(accounted, 60, "sacct's accounting of the cancelled jobs"):
        assert run.tags["orch.sched.state"].startswith("CANCELLED"), run.tags["orch.sched.state"]


def test_status_falls_back_to_squeue_when_accounting_is_down(slurm, store):
    spec = store.spec({"name": "sl_nodb", "workload": "smoke", "params": {"steps": 400, "sleep_s": 0.1}})
    subprocess.run([str(DEV / "stop-slurm.sh"), "slurmdbd"], check=True, capture_output=True)
    try:
        store.orch("submit", str(spec), "--seeds", "2", *SLURM, check=True)
        wait_for(
            lambda: sum("start" in events(j) for j in journals(store.workdir, "sl_nodb").values()) == 2,
            what="both runs to start",
        )
        runs = store.seed_runs("sl_nodb")
        backend = SlurmBackend()
        states = backend.poll([Job(r.tags["orch.job_id"], RunDir(Path(r.tags["orch.run_dir"]))) for r in runs])
        assert [s.state for s in states] == [RUNNING, RUNNING]
        assert backend.sacct_ok is False and backend.calls == {"sacct": 1, "squeue": 1}  # one batched query
        # a job that dies without telling (SIGKILL, as the OOM killer does): found dead through squeue
        victim = runs[0]
        pid = [r for r in read_journal(RunDir(Path(victim.tags["orch.run_dir"])).journal)[0] if r["event"] == "start"][
            -1
        ]["pid"]
        os.kill(pid, 9)
        wait_for(
            lambda: (
                "FAILED"
                in subprocess.run(
                    ["squeue", "--me", "-h", "-t", "all", "-r", "-j", victim.tags["orch.job_id"], "-o", "%T"],
                    capture_output=True,
                    text=True,
                ).stdout
            ),
            60,
            "Slurm to see it",
        )
        store.orch("status", "sl_nodb", check=True)
        now = {r.run_id: r for r in store.seed_runs("sl_nodb")}
        assert now[victim.run_id].status == "KILLED" and "Slurm: FAILED" in now[victim.run_id].tags["orch.error"]
        assert now[runs[1].run_id].status == "RUNNING"
        store.orch("cancel", "sl_nodb", check=True)
    finally:
        slurm()  # slurmdbd back for the other tests


def test_an_impossible_request_is_refused_and_nothing_is_queued(slurm, store):
    spec = store.spec({"name": "sl_gpu", "workload": "smoke", "resources": {"gpus": 2}})  # n2 has one fake GPU
    before = queued_names()
    result = store.orch("submit", str(spec), *SLURM)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert "Slurm refuses this request" in message and "gres" in message and "resources" in message
    assert store.ledger().experiment_id("sl_gpu") is None and not (store.workdir / "sl_gpu").exists()
    assert set(queued_names()) <= set(before)
    result = store.orch("submit", str(spec), "--backend", "slurm", "--cluster", "nosuch")
    assert result.exit_code == 2 and "no cluster profile 'nosuch'" in " ".join(result.output.split())


@pytest.mark.parametrize("fault", ["after-sbatch", "before-sbatch"])
def test_orch_killed_mid_submission_is_reconciled_without_duplicates(slurm, store, fault):
    """orch dies right after sbatch accepted the array (job ids not yet recorded anywhere) or right
    before sbatch: the next call finds the jobs by their token (or sees none) and neither loses nor
    queues twice."""
    name = f"sl_crash_{fault.split('-')[0]}"
    spec = store.spec({"name": name, "workload": "smoke", "params": {"steps": 4}})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator",
            "submit",
            str(spec),
            "--seeds",
            "3",
            *SLURM,
            "--tracking-uri",
            store.uri,
        ],
        env={**os.environ, "ORCH_FAULT": fault},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 70, proc.stdout + proc.stderr  # died at the fault point
    first = store.seed_runs(name)
    assert len(first) == 3 and not any(r.tags.get("orch.job_id") for r in first)
    tokens = {read_record(RunDir(Path(r.tags["orch.run_dir"])))["token"] for r in first}
    assert len(tokens) == 1
    store.orch("submit", str(spec), "--seeds", "3", *SLURM, check=True)
    final = status_until(store, name, {"FINISHED", "FAILED", "KILLED"})
    assert {r.run_id for r in final} == {r.run_id for r in first}  # the same MLflow runs, no new ones
    assert {r.status for r in final} == {"FINISHED"}
    starts = [events(j).count("start") for j in journals(store.workdir, name).values()]
    assert starts == [1, 1, 1]  # every run executed exactly once
    if fault == "after-sbatch":  # the orphaned array was adopted, not resubmitted
        assert {read_record(RunDir(Path(r.tags["orch.run_dir"])))["token"] for r in final} == tokens


@pytest.mark.slow
def test_a_requeue_slurm_refuses_ends_the_run_with_slurms_answer(slurm, store):
    """The dev cluster has `JobRequeue=0`; a profile with `requeue: false` leaves the job to that default, so
    Slurm will not requeue it: SIGUSR2 -> submitit asks `scontrol requeue`, Slurm answers "Requested operation
    is presently disabled", and that answer is the run's orch.error (it was journaled `requeue`, then closed
    KILLED with only "Slurm: FAILED (NonZeroExitCode)")."""
    spec = store.spec(
        {
            "name": "sl_norequeue",
            "workload": "smoke",
            "params": {"steps": 400, "sleep_s": 0.1},
            "slurm": {"requeue": False},
        }
    )
    store.orch("submit", str(spec), *SLURM, check=True)
    (run,) = store.seed_runs("sl_norequeue")
    run_dir = RunDir(Path(run.tags["orch.run_dir"]))
    wait_for(lambda: any(r["event"] == "checkpoint" for r in read_journal(run_dir.journal)[0]), what="a checkpoint")
    job_id = run.tags["orch.job_id"]
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True).stdout
    assert "Requeue=0" in shown  # the site's JobRequeue=0, not overridden
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
    (final,) = status_until(store, "sl_norequeue", {"FINISHED", "FAILED", "KILLED"})
    assert final.status == "KILLED"
    assert "Slurm refused to requeue" in final.tags["orch.error"] and "disabled" in final.tags["orch.error"]
    records, _ = read_journal(run_dir.journal)
    assert "requeue" not in events(records) and events(records).count("start") == 1


@pytest.mark.slow
def test_a_run_killed_at_its_time_limit_says_so_in_mlflow(slurm, store):
    """A job over its time limit, with no requeue left: its run does not finish, and sacct's TIMEOUT is on it."""
    profile = store.root / "no-requeue.yaml"
    shipped = (REPO / "orchestrator" / "profiles" / "local-slurm.yaml").read_text()
    # no SIGUSR2 ahead of the limit and no requeue: Slurm itself stops the job at its limit
    profile.write_text(
        shipped.replace("max_requeues: 3", "max_requeues: 0").replace("signal_delay_s: 60", "signal_delay_s: 0")
    )
    spec = store.spec(
        {
            "name": "sl_timeout",
            "workload": "smoke",
            "params": {"steps": 2000, "sleep_s": 0.1},
            "resources": {"time_min": 1},
        }
    )
    store.orch("submit", str(spec), "--backend", "slurm", "--cluster", str(profile), "--wait")

    def accounted():
        store.orch("status", "sl_timeout")
        (run,) = store.seed_runs("sl_timeout")
        return run if "orch.sched.state" in run.tags else None

    run = wait_for(accounted, 120, "sacct's accounting of the timed-out job")
    assert run.status != "FINISHED" and run.tags["orch.sched.state"] == "TIMEOUT", run.tags
    assert run.tags["orch.sched.elapsed"] >= "00:01:00"
