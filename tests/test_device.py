"""The device a run gets, recorded as tags on every run, and a GPU request with no CUDA device refused instead
of trained on the CPU (job/device.py). This machine has no GPU: that is the refusal's test."""

from __future__ import annotations

from orchestrator.job import device, worker
from orchestrator.job.journal import read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run
from orchestrator.tracking.records import Tag


def test_every_run_records_its_device_as_tags(store):
    cpu = store.spec({"name": "dev_cpu", "workload": "smoke", "params": {"steps": 3}}, name="cpu.yaml")
    store.orch("submit", str(cpu), check=True)
    (run,) = store.seed_runs("dev_cpu")
    assert run.status == "FINISHED" and run.tags[Tag.DEVICE] == "cpu" and run.tags[Tag.CPU_MODEL]
    assert Tag.CUDA_VISIBLE in run.tags and Tag.GPU_MODEL not in run.tags


def test_a_gpu_run_that_finds_no_cuda_fails_saying_so_and_never_trains(tmp_path, monkeypatch):
    """What a job on a GPU node without a working CUDA sees (the local backend refuses gpus > 0 on a machine
    without GPUs before anything starts; a cluster job only finds out on its node)."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # what Slurm's gres binding sets
    run_dir = RunDir(tmp_path / "gpu")
    run_dir.create(
        {
            "run": Run("smoke", {"steps": 3}, 0, "base").to_dict(),
            "run_id": "x",
            "experiment_id": "0",
            "cpus": 1,
            "gpus": 1,
        }
    )
    assert worker.execute(run_dir.path) == "FAILED"
    records, _ = read_journal(run_dir.journal)
    kinds = [r["event"] for r in records]
    assert kinds == ["start", "device", "end"]  # no metrics: nothing was trained on the CPU
    assert records[1]["tags"][device.CUDA_VISIBLE] == "0" and records[1]["tags"][device.DEVICE] == "cpu"
    error = records[-1]["error"]
    assert (
        "NoCudaError" in error and "resources.gpus=1 but no CUDA device" in error and "CUDA_VISIBLE_DEVICES=0" in error
    )


def test_the_local_backend_refuses_gpus_on_a_machine_without(store):
    gpu = store.spec({"name": "dev_gpu", "workload": "smoke", "resources": {"gpus": 1}}, name="gpu.yaml")
    result = store.orch("submit", str(gpu))
    assert result.exit_code == 2 and "resources.gpus" in result.output
    assert store.seed_runs("dev_gpu") == []
