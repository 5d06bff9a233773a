"""What a run cost and how it behaved: system metrics sampled in the worker, through the journal, onto the run's
MLflow record (CPU %, memory, the run's own GPUs), its totals (wall, CPU-seconds, GPU-seconds held, peaks),
`orch status --costs` per group; and the GPU path against recorded `nvidia-smi` output (no GPU here)."""

from __future__ import annotations

import json

import pytest

from orchestrator.job import sysmetrics
from orchestrator.job.journal import JournalWriter, read_journal

# `nvidia-smi --query-gpu=index,uuid,utilization.gpu,memory.used --format=csv,noheader,nounits` on a 4-GPU
# node, as recorded (the third GPU a MIG-enabled one that reports no utilisation)
NVIDIA_SMI = """0, GPU-1f0e6c0a-aaaa-bbbb-cccc-000000000000, 87, 30512
1, GPU-2f0e6c0a-aaaa-bbbb-cccc-111111111111, 0, 3
2, GPU-3f0e6c0a-aaaa-bbbb-cccc-222222222222, [N/A], 1024
3, GPU-4f0e6c0a-aaaa-bbbb-cccc-333333333333, 42, 12000
"""


def test_only_the_runs_own_gpus_are_read_never_the_whole_node():
    samples = sysmetrics.parse_nvidia_smi(NVIDIA_SMI, ["3", "0"])
    assert [(g.index, g.util_percent, g.mem_mb) for g in samples] == [("3", 42.0, 12000.0), ("0", 87.0, 30512.0)]
    by_uuid = sysmetrics.parse_nvidia_smi(NVIDIA_SMI, ["GPU-2f0e6c0a-aaaa-bbbb-cccc-111111111111"])
    assert [(g.index, g.mem_mb) for g in by_uuid] == [("1", 3.0)]
    assert sysmetrics.parse_nvidia_smi(NVIDIA_SMI, ["2"]) == []  # [N/A]: not reported, not made up
    assert sysmetrics.visible_gpus({"CUDA_VISIBLE_DEVICES": "1,3"}) == ["1", "3"]
    assert sysmetrics.visible_gpus({}) is None and sysmetrics.visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert sysmetrics.gpu_reader(None) is None and sysmetrics.gpu_reader([]) is None


def test_the_sampler_journals_samples_and_totals(tmp_path):
    journal = JournalWriter(tmp_path / "journal.jsonl")
    reads = iter([[sysmetrics.GpuSample("0", 50.0, 100.0)], [sysmetrics.GpuSample("0", 70.0, 300.0)]] * 10)
    sampler = sysmetrics.Sampler(journal, interval_s=0.05, gpus_held=2.0, gpus=lambda: next(reads)).start()
    burn = sum(i * i for i in range(2_000_000))  # some CPU time to account for
    sampler.stop()
    journal.close()
    records = [r for r in read_journal(tmp_path / "journal.jsonl")[0] if r["event"] == "system"]
    assert burn > 0 and len(records) >= 2 and [r["step"] for r in records] == list(range(len(records)))
    first, last = records[0]["metrics"], records[-1]["metrics"]
    assert first["system/rss_mb"] > 10 and "system/cpu_percent" in first and "system/gpu0_util_percent" in first
    assert last["system/cpu_s"] > 0.05 and last["system/wall_s"] > 0
    assert last["system/gpu_s"] == pytest.approx(2.0 * last["system/wall_s"], abs=2e-3)  # GPUs held, not used
    assert last["system/peak_gpu_mem_mb"] == 300.0 and last["system/peak_rss_mb"] >= first["system/rss_mb"]


def test_a_run_records_its_system_metrics_and_status_shows_the_costs(store):
    spec = {
        "name": "costs",
        "workload": "smoke",
        "params": {"steps": 30, "sleep_s": 0.1},
        "seeds": 2,
        "variants": {"a": {"offset": 0.0}, "b": {"offset": 1.0}},
    }
    store.orch("submit", str(store.spec(spec)), check=True)
    runs = store.seed_runs("costs")
    assert len(runs) == 4
    for run in runs:
        assert run.metrics["system/wall_s"] >= 2.5 and run.metrics["system/cpu_s"] > 0
        assert run.metrics["system/peak_rss_mb"] > 10 and "system/rss_mb" in run.metrics
        assert run.metrics["system/gpu_s"] == 0  # no GPU held
    history = store.ledger().client.get_metric_history(runs[0].run_id, "system/rss_mb")
    assert len(history) >= 3  # 1 s, 2 s, then the totals' sample: a short run still gets several
    (final,) = store.ledger().client.get_metric_history(runs[0].run_id, "final_loss")
    assert final.step == 29  # the final sits on the workload's last step, not on the sampler's sample count
    out = store.orch("status", "costs", "--costs", check=True).output
    assert "CPU-h" in out and "GPU-h" in out and "peak memory" in out
    costs = json.loads(store.orch("status", "costs", "--costs", "--json", check=True).output)
    group = costs["groups"][0]["costs"]
    assert group["runs"] == 2 and group["wall_h"] * 3600 >= 5.0 and group["gpu_h"] == 0
    assert group["peak_rss_mb"] == max(
        r.metrics["system/peak_rss_mb"] for r in runs if r.tags["orch.variant"] == costs["groups"][0]["variant"]
    )


def test_system_metrics_off_with_one_setting(store):
    spec = {"name": "quiet", "workload": "smoke", "params": {"steps": 3}, "tracking": {"system_metrics_s": 0}}
    store.orch("submit", str(store.spec(spec)), check=True)
    (run,) = store.seed_runs("quiet")
    assert not [m for m in run.metrics if m.startswith("system/")]


def test_a_bad_interval_is_refused(store):
    result = store.orch(
        "submit", str(store.spec({"name": "bad", "workload": "smoke", "tracking": {"system_metrics_s": -1}}))
    )
    assert result.exit_code == 2 and "tracking.system_metrics_s" in result.output
