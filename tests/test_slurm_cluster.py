"""Clusters as the lab meets them, against the two-node dev Slurm (cluster/dev/start-slurm.sh: nodes n1 and n2
on this host, n2 with a fake GPU gres and the feature ``fakegpu``, JobRequeue=0), started through the same
fixture as tests/test_slurm.py.

Covered: the GPU request forms in the emitted sbatch script; the spec's ``slurm:`` section merged over the
profile and validated; arrays spread over both nodes; a GPU job landing on the fake-GPU node and refusing to
train on the CPU, its device recorded as tags; packed jobs (runs_per_job) equal to unpacked runs, each run
requeued and resumed on its own; the job limit refused before anything is queued; ``--dry-run`` showing the
job script and ``sbatch --test-only``'s answer with nothing created; the shared-filesystem checks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_slurm import SMOKE, dev_slurm, journals, status_until, uninterrupted, wait_for

from orchestrator.backends import sharedfs
from orchestrator.backends.slurm import SlurmBackend
from orchestrator.backends.slurm_profile import ClusterProfile, load_profile
from orchestrator.errors import InputError
from orchestrator.job import device
from orchestrator.job.journal import read_journal
from orchestrator.job.pack import gpu_slices
from orchestrator.job.rundir import RunDir
from orchestrator.spec.spec import Resources
from orchestrator.tracking.records import Tag

REPO = Path(__file__).resolve().parent.parent
SLURM = ["--backend", "slurm", "--cluster", "local-slurm"]


@pytest.fixture(scope="session")
def slurm():
    yield from dev_slurm()  # started once; whichever module started it stops it at the end of the session


def sbatch_lines(profile: ClusterProfile, resources: Resources, jobs: int = 3) -> list[str]:
    return [
        line for line in SlurmBackend(profile, resources).job_script(jobs).splitlines() if line.startswith("#SBATCH")
    ]


# -- no Slurm needed ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "form, expected, absent",
    [
        ("gres", ["#SBATCH --gres=gpu:a100:2"], ["--gpus", "--exclusive"]),
        ("gpus", ["#SBATCH --gpus=a100:2"], ["--gres", "--exclusive"]),
        ("gpus-per-node", ["#SBATCH --gpus-per-node=a100:2"], ["--gres", "--exclusive"]),
        ("constraint", ["#SBATCH --constraint='sirocco&a100'", "#SBATCH --exclusive"], ["--gres", "--gpus"]),
    ],
)
def test_the_gpu_request_form_is_the_profiles_choice(form, expected, absent):
    profile = ClusterProfile(name="site", gpu_type="a100", gpu_request=form, constraint="sirocco&a100")
    lines = sbatch_lines(profile, Resources(cpus=2, gpus=2))
    for line in expected:
        assert line in lines, lines
    assert not [line for line in lines for flag in absent if line.startswith(f"#SBATCH {flag}")], lines
    assert "#SBATCH --requeue" in lines and "#SBATCH --array=0-2%3" in lines
    assert "#SBATCH --cpus-per-task=2" in lines


def test_requeue_is_emitted_by_default_and_the_profile_can_leave_it_to_the_site():
    assert "#SBATCH --requeue" in sbatch_lines(ClusterProfile(name="a"), Resources())
    assert not [x for x in sbatch_lines(ClusterProfile(name="a", requeue=False), Resources()) if "requeue" in x]


def test_a_packed_job_asks_for_its_runs_cores_memory_and_shared_gpus():
    lines = sbatch_lines(ClusterProfile(name="a"), Resources(cpus=2, mem_gb=3, gpus=1, runs_per_job=8, runs_per_gpu=4))
    assert {"#SBATCH --cpus-per-task=16", "#SBATCH --mem=24576M", "#SBATCH --gres=gpu:2"} <= set(lines)
    assert gpu_slices(8, 0.25, ["4", "7"]) == ["4"] * 4 + ["7"] * 4  # four runs per GPU
    assert gpu_slices(2, 2.0, ["0", "1", "2", "3"]) == ["0,1", "2,3"]  # two GPUs per run
    with pytest.raises(InputError, match="runs_per_job") as err:  # a fraction of a GPU, alone in its job
        ClusterProfile(name="a").check(Resources(gpus=0.25))
    assert err.value.field == "resources.gpus"
    with pytest.raises(InputError, match="for one job of 4 packed runs") as err:
        ClusterProfile(name="a", limits={"cpus": 8}).check(Resources(cpus=4, runs_per_job=4))
    assert err.value.field == "resources.runs_per_job"
    with pytest.raises(InputError, match="sets no 'constraint'"):
        ClusterProfile(name="a", gpu_request="constraint").check(Resources(gpus=1))


def test_the_job_limit_refuses_with_the_packing_that_would_fit():
    profile = ClusterProfile(name="qos", max_jobs=10)
    profile.check_job_count(4, 6)
    with pytest.raises(InputError, match=r"5 jobs plus the 6 already queued exceed .* max_jobs=10.*at most 4 jobs"):
        profile.check_job_count(5, 6)


def test_a_specs_slurm_section_is_merged_over_the_profile_and_validated(tmp_path):
    merged = load_profile("local-slurm", overrides={"partition": "gpu", "limits": {"gpus": 1}})
    assert merged.partition == "gpu" and merged.limits.gpus == 1 and merged.max_requeues == 3  # the rest kept
    with pytest.raises(InputError) as err:
        load_profile("local-slurm", overrides={"partiton": "gpu"}, overrides_source="x.yaml")
    assert err.value.field == "slurm.partiton" and err.value.source == "x.yaml"
    with pytest.raises(InputError) as err:
        load_profile("local-slurm", overrides={"gpu_request": "gpu"}, overrides_source="x.yaml")
    assert err.value.field == "slurm.gpu_request"


def test_the_device_tags_are_names_records_knows_and_a_gpu_run_without_cuda_is_refused(tmp_path):
    tag_names = {v for k, v in vars(Tag).items() if not k.startswith("_") and isinstance(v, str)}
    assert set(device.TAGS) <= tag_names
    written: list[tuple[str, dict]] = []

    class Journal:
        def write(self, event, **fields):
            written.append((event, fields))

    assert device.claim(0, Journal()) == "cpu"
    with pytest.raises(device.NoCudaError, match=r"resources\.gpus=0\.5 but no CUDA device.*refuses"):
        device.claim(0.5, Journal())
    assert [e for e, _ in written] == ["device", "device"]
    assert written[0][1]["tags"][device.DEVICE] == "cpu" and device.CUDA_VISIBLE in written[1][1]["tags"]


def test_the_shared_filesystem_checks(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\nserver:/home /home nfs4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n"
        "lfs@o2ib:/scratch /scratch lustre rw 0 0\n"
    )
    assert sharedfs.mount_of("/home/u/jobs/x", str(mounts)) == ("/home", "nfs4")
    assert sharedfs.mount_of("/tmp/jobs", str(mounts)) == ("/tmp", "tmpfs")
    m = str(mounts)
    assert sharedfs.job_folder_problem("/tmp/jobs", {"127.0.0.1"}, m) is None  # the nodes are this host
    kind, message = sharedfs.job_folder_problem("/tmp/orch-jobs", {"node042"}, m)
    assert kind == "error" and "node-local" in message and "tmpfs" in message
    assert sharedfs.job_folder_problem("/home/u/jobs", {"node042"}, m) is None  # NFS: shared
    assert sharedfs.job_folder_problem("/scratch/u/jobs", {"node042"}, m) is None  # Lustre: shared
    kind, message = sharedfs.job_folder_problem("/opt/jobs", {"node042"}, m)  # a local disk: cannot tell
    assert kind == "warning" and "cannot tell" in message
    assert "SQLite's file locking is unsafe" in sharedfs.sqlite_problem("sqlite:////home/u/mlruns/mlflow.db", m)
    assert "lustre" in sharedfs.sqlite_problem("sqlite:////scratch/u/mlflow.db", m)
    assert sharedfs.sqlite_problem("sqlite:////opt/mlruns/mlflow.db", m) is None
    assert sharedfs.sqlite_problem("postgresql://db/mlflow", m) is None


# -- against the two-node dev Slurm -----------------------------------------------------------------
def node_of(job_id: str) -> str:
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-j", job_id, "-o", "JobID,NodeList"], capture_output=True, text=True
    ).stdout
    return next((line.split("|")[1] for line in out.splitlines() if line.split("|")[0] == job_id), "")


def test_an_array_spreads_over_both_nodes(slurm, store):
    spec = store.spec({"name": "sl_spread", "workload": "smoke", "params": {"steps": 8, "sleep_s": 0.25}})
    store.orch("submit", str(spec), "--seeds", "6", *SLURM, "--wait", check=True)
    runs = store.seed_runs("sl_spread")
    assert {r.status for r in runs} == {"FINISHED"} and len(runs) == 6
    # sacct reads slurmdbd, which may record a job's node a moment after the job ended
    nodes = {wait_for(lambda r=r: node_of(r.tags[Tag.JOB_ID]), timeout=30, what="sacct's node") for r in runs}
    assert nodes == {"n1", "n2"}, nodes


def test_a_gpu_job_lands_on_the_gpu_node_and_refuses_to_train_on_the_cpu(slurm, store):
    """The fake GPU has no CUDA behind it: the run must fail saying so, with its device recorded."""
    for form, extra in (("gres", {"partition": "gpu"}), ("constraint", {"constraint": "fakegpu"})):
        name = f"sl_gpu_{form}"
        spec = store.spec(
            {
                "name": name,
                "workload": "smoke",
                "params": {"steps": 2},
                "resources": {"gpus": 1},
                "slurm": {"gpu_request": form, **extra},
            },
            name=f"{name}.yaml",
        )
        result = store.orch("submit", str(spec), *SLURM, "--wait")
        assert result.exit_code == 1, result.output
        (run,) = store.seed_runs(name)
        assert run.status == "FAILED" and "no CUDA device" in run.tags[Tag.ERROR], run.tags.get(Tag.ERROR)
        assert node_of(run.tags[Tag.JOB_ID]) == "n2"
        assert run.tags[Tag.DEVICE] == "cpu" and run.tags[Tag.CPU_MODEL]
        # gres binds the fake device (Slurm sets CUDA_VISIBLE_DEVICES); a node feature binds nothing
        assert run.tags[Tag.CUDA_VISIBLE] == ("0" if form == "gres" else "unset")


def test_packed_runs_equal_unpacked_runs_and_each_is_requeued_and_resumed(slurm, store, tmp_path):
    """4 seeds, 2 per job: 2 array tasks; SIGUSR2 to one packed job requeues it (JobRequeue=0 on this
    cluster: --requeue is what makes it work), both of its runs resume from their own checkpoints in their
    own MLflow runs, and every run's history equals the same seed run alone."""
    params = {"steps": 20, "sleep_s": 0.25, "noise": 0.1}
    spec = store.spec({"name": "sl_pack", "workload": "smoke", "params": params, "resources": {"runs_per_job": 2}})
    store.orch("submit", str(spec), "--seeds", "4", *SLURM, check=True)
    runs = store.seed_runs("sl_pack")
    by_job: dict[str, list] = {}
    for run in runs:
        by_job.setdefault(run.tags[Tag.JOB_ID], []).append(run)
    assert len(runs) == 4 and sorted(len(v) for v in by_job.values()) == [2, 2], by_job.keys()
    victim_job, victims = sorted(by_job.items())[0]
    victim_dirs = [RunDir(Path(r.tags[Tag.RUN_DIR])) for r in victims]
    wait_for(
        lambda: all(
            any(e["event"] == "checkpoint" and e["step"] >= 3 for e in read_journal(d.journal)[0]) for d in victim_dirs
        ),
        what="both packed runs to checkpoint",
    )
    subprocess.run(["scancel", "--signal=USR2", victim_job], check=True)
    final = status_until(store, "sl_pack", {"FINISHED", "FAILED", "KILLED"}, timeout=240)
    assert {r.status for r in final} == {"FINISHED"}, {r.run_id: r.tags.get(Tag.ERROR) for r in final}
    assert {r.run_id for r in final} == {r.run_id for r in runs}  # the same MLflow runs, none added
    client = store.ledger().client
    for run in final:
        seed = int(run.tags[Tag.SEED])
        expected_final, expected_curve = uninterrupted(tmp_path / f"s{seed}", params, seed)
        assert run.metrics["final_loss"] == expected_final
        assert sorted((m.step, m.value) for m in client.get_metric_history(run.run_id, "loss")) == expected_curve
        records, _ = read_journal(RunDir(Path(run.tags[Tag.RUN_DIR])).journal)
        kinds = [r["event"] for r in records]
        if run.tags[Tag.JOB_ID] == victim_job:
            assert kinds.count("start") == 2 and "requeue" in kinds and run.tags[Tag.RESTART_COUNT] == "1"
        else:
            assert kinds.count("start") == 1 and "requeue" not in kinds


def test_a_submission_over_the_job_limit_is_refused_before_anything_is_queued(slurm, store, tmp_path):
    profile = tmp_path / "qos.yaml"
    profile.write_text((REPO / "orchestrator" / "profiles" / "local-slurm.yaml").read_text() + "max_jobs: 2\n")
    backend = SlurmBackend(load_profile(str(profile)), Resources())
    dirs = [RunDir(tmp_path / f"r{i}") for i in range(3)]
    with pytest.raises(InputError, match="max_jobs=2"):
        backend.submit(dirs)
    assert backend.calls["sbatch"] == 0 and not any((d.path / "scheduler.json").exists() for d in dirs)


def test_dry_run_shows_the_job_script_and_sbatch_test_only_and_creates_nothing(slurm, store):
    spec = store.spec(
        {"name": "sl_dry", **SMOKE, "resources": {"runs_per_job": 2, "cpus": 1}, "slurm": {"partition": "gpu"}}
    )
    result = store.orch("submit", str(spec), "--seeds", "3", *SLURM, "--dry-run", check=True)
    out = result.output
    assert "#SBATCH --array=0-1%2" in out and "#SBATCH --requeue" in out and "#SBATCH --cpus-per-task=2" in out
    assert "#SBATCH --partition=gpu" in out  # the spec's slurm: section, merged over the profile
    assert "sbatch --test-only: " in out and "to start at" in out and "on nodes n2" in out
    assert store.ledger().experiment_id("sl_dry") is None and not (store.workdir / "sl_dry").exists()
    bad = store.spec({"name": "sl_dry_bad", **SMOKE, "resources": {"gpus": 2}}, name="bad.yaml")
    result = store.orch("submit", str(bad), *SLURM, "--dry-run")
    assert result.exit_code == 2 and "Slurm refuses this request" in " ".join(result.output.split())


def test_cancelling_one_packed_run_leaves_the_others_of_its_job_running(slurm, store):
    spec = store.spec(
        {
            "name": "sl_pack_cancel",
            "workload": "smoke",
            "params": {"steps": 40, "sleep_s": 0.2},
            "resources": {"runs_per_job": 2},
        }
    )
    store.orch("submit", str(spec), "--seeds", "2", *SLURM, check=True)
    runs = sorted(store.seed_runs("sl_pack_cancel"), key=lambda r: int(r.tags[Tag.SEED]))
    assert len({r.tags[Tag.JOB_ID] for r in runs}) == 1  # one job holds both
    dirs = [RunDir(Path(r.tags[Tag.RUN_DIR])) for r in runs]
    wait_for(
        lambda: all(any(e["event"] == "metrics" for e in read_journal(d.journal)[0]) for d in dirs),
        what="both packed runs to log",
    )
    assert "cancelled 1 run(s)" in store.orch("cancel", "sl_pack_cancel", "--run", runs[0].run_id, check=True).output
    final = status_until(store, "sl_pack_cancel", {"FINISHED", "FAILED", "KILLED"})
    status = {r.run_id: r.status for r in final}
    assert status == {runs[0].run_id: "KILLED", runs[1].run_id: "FINISHED"}
    ends = [r for r in read_journal(dirs[0].journal)[0] if r["event"] == "end"]
    assert [e["status"] for e in ends] == ["KILLED"]  # the run itself journaled it (its pack sent SIGTERM)


def test_a_packed_job_slurm_will_not_requeue_ends_each_run_with_slurms_answer(slurm, store):
    """`requeue: false` on this JobRequeue=0 cluster: SIGUSR2 -> each packed run journals `requeue` and stops,
    Slurm refuses `scontrol requeue`, and the job's process closes each run KILLED with Slurm's answer
    (instead of leaving them waiting for an attempt that never comes)."""
    spec = store.spec(
        {
            "name": "sl_pack_norequeue",
            "workload": "smoke",
            "params": {"steps": 400, "sleep_s": 0.1},
            "resources": {"runs_per_job": 2},
            "slurm": {"requeue": False},
        }
    )
    store.orch("submit", str(spec), "--seeds", "2", *SLURM, check=True)
    runs = store.seed_runs("sl_pack_norequeue")
    dirs = [RunDir(Path(r.tags[Tag.RUN_DIR])) for r in runs]
    wait_for(
        lambda: all(any(e["event"] == "checkpoint" for e in read_journal(d.journal)[0]) for d in dirs),
        what="both packed runs to checkpoint",
    )
    subprocess.run(["scancel", "--signal=USR2", runs[0].tags[Tag.JOB_ID]], check=True)
    final = status_until(store, "sl_pack_norequeue", {"FINISHED", "FAILED", "KILLED"})
    for run in final:
        assert run.status == "KILLED", run.tags.get(Tag.ERROR)
        assert "Slurm refused to requeue" in run.tags[Tag.ERROR] and "disabled" in run.tags[Tag.ERROR]


def test_a_packed_job_larger_than_any_node_says_what_it_asked_for(slurm, store):
    """runs_per_job x cpus over a node's cores: Slurm says only "Requested node configuration is not
    available"; orch adds the arithmetic, the partition and the profile file to set limits in."""
    spec = store.spec(
        {"name": "sl_big", "workload": "smoke", "params": {"steps": 2}, "resources": {"cpus": 1, "runs_per_job": 64}}
    )
    result = store.orch("submit", str(spec), "--seeds", "64", *SLURM)
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "resources.runs_per_job" in text, result.output  # sbatch --test-only's refusal
    assert "node configuration is not available" in text and "runs_per_job 64 x 1 cpus" in text
    assert "partition debug" in text and "local-slurm.yaml" in text


def test_the_node_hint_only_answers_slurms_node_refusal():
    backend = SlurmBackend(ClusterProfile(name="site", partition="cpu"), Resources(cpus=2, runs_per_job=8))
    hint = backend._node_hint(
        "sbatch: error: Batch job submission failed: Requested node configuration is not available"
    )
    assert "one job asked for 16 cpus = runs_per_job 8 x 2 cpus" in hint and "partition cpu" in hint
    assert backend._node_hint("sbatch: error: Invalid account") == ""


def test_cancelled_packed_runs_resume_when_submitted_again(slurm, store):
    """The issue's repro: packed runs cancelled mid-way, then the same submission again with --wait: every
    run resumes from its checkpoint in its pack (they were skipped for the KILLED end of the cancel)."""
    spec = store.spec(
        {
            "name": "sl_repack",
            "workload": "smoke",
            "params": {"steps": 30, "sleep_s": 0.3},
            "resources": {"runs_per_job": 2},
        }
    )
    store.orch("submit", str(spec), "--seeds", "2", *SLURM, check=True)

    def both_checkpointed():
        found = journals(store.workdir, "sl_repack").values()
        return (
            len(found) == 2
            and all(any(e["event"] == "checkpoint" and e["step"] >= 3 for e in records) for records in found)
        ) or None

    wait_for(both_checkpointed, what="both packed runs checkpointed")
    store.orch("cancel", "sl_repack", check=True)
    status_until(store, "sl_repack", {"KILLED"})
    result = store.orch("submit", str(spec), "--seeds", "2", *SLURM, "--wait")
    assert result.exit_code == 0, result.output
    runs = store.seed_runs("sl_repack")
    assert len(runs) == 2 and {r.status for r in runs} == {"FINISHED"}
    for r in runs:
        starts = [e for e in read_journal(Path(r.tags[Tag.RUN_DIR]) / "journal.jsonl")[0] if e["event"] == "start"]
        assert len(starts) == 2 and starts[-1]["resumed_from_step"] >= 3, starts
