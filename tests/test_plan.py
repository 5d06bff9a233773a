"""Expansion (variants x grid x seeds) and run identity (content hashes)."""

from __future__ import annotations

import subprocess
import sys

import yaml

from orchestrator.driver import reconcile
from orchestrator.spec.plan import Run, content_hash, expand
from orchestrator.spec.spec import load_spec
from orchestrator.tracking.ledger import RunRecord


def write(tmp_path, doc):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_expansion_is_variants_times_grid_times_seeds(tmp_path):
    spec = load_spec(
        write(
            tmp_path,
            {
                "name": "e",
                "workload": "smoke",
                "params": {"steps": 3},
                "variants": {"a": {"offset": 0.0}, "b": {"offset": 1.0}},
                "grid": {"noise": [0.1, 0.2, 0.3], "sleep_s": [0.0, 0.01]},
                "seeds": {"count": 4, "base": 10},
            },
        )
    )
    runs = expand(spec)
    assert len(runs) == 2 * 3 * 2 * 4
    assert len({r.key for r in runs}) == len(runs)
    assert len({r.group for r in runs}) == 2 * 3 * 2
    assert sorted({r.seed for r in runs}) == [10, 11, 12, 13]
    first = runs[0]
    assert first.params["steps"] == 3 and first.params["offset"] == 0.0 and first.params["noise"] == 0.1
    assert first.params["fail_at_step"] is None  # defaults are part of the resolved params


def test_overrides_from_cli(tmp_path):
    spec = load_spec(
        write(tmp_path, {"name": "e", "workload": "smoke", "seeds": 2}),
        sets=["steps=7", "resources.cpus=2", "params.noise=0.5"],
        seeds=5,
    )
    runs = expand(spec)
    assert len(runs) == 5 and spec.resources.cpus == 2
    assert runs[0].params["steps"] == 7 and runs[0].params["noise"] == 0.5


def test_key_is_stable_across_dict_order_and_processes():
    a = Run("smoke", {"steps": 3, "noise": 0.1, "nested": {"x": 1, "y": 2}}, 4, "v")
    b = Run("smoke", {"nested": {"y": 2, "x": 1}, "noise": 0.1, "steps": 3}, 4, "other-name")
    assert a.key == b.key and a.group == b.group  # identity is content, not names or order
    assert Run("smoke", a.params, 5, "v").group == a.group and Run("smoke", a.params, 5, "v").key != a.key
    code = (
        "from orchestrator.spec.plan import Run; "
        "print(Run('smoke', {'steps': 3, 'noise': 0.1, 'nested': {'x': 1, 'y': 2}}, 4, 'v').key)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "123", "PATH": ""},
        cwd=str(tmp_repo()),
    )
    assert out.stdout.strip() == a.key
    assert content_hash({"b": 1, "a": [1, 2]}) == content_hash({"a": [1, 2], "b": 1})


def tmp_repo():
    from pathlib import Path

    return Path(__file__).resolve().parent.parent


def record(run: Run, status: str, start: int = 0) -> RunRecord:
    return RunRecord(f"id-{run.key}-{status}", status, {"orch.key": run.key}, {}, start)


def test_reconcile_skips_finished_keeps_active_reruns_failed_and_missing():
    runs = [Run("smoke", {"steps": 1}, seed, "base") for seed in range(5)]
    records = [
        record(runs[0], "FINISHED"),
        record(runs[1], "FAILED"),
        record(runs[2], "RUNNING"),
        record(runs[3], "KILLED"),
        record(runs[3], "FINISHED", start=-1),
    ]
    out = reconcile(runs, records)
    assert [r.seed for r in out.done] == [0, 3]  # a FINISHED attempt wins over a later KILLED one
    assert [r.seed for r in out.active] == [2]
    assert [(r.seed, prev.status if prev else None) for r, prev in out.todo] == [(1, "FAILED"), (4, None)]
