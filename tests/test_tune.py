"""`orch tune` against real Ray Tune and a real MLflow store: ASHA early stops, exact grids, failing trials,
seeds_per_trial means, best.yaml round trip through `orch submit`, and resume after the driver is killed."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml
from support import stop_group, wait_for

from orchestrator.job.journal import read_journal
from orchestrator.spec.spec import load_spec
from orchestrator.tune.sweep import run_sweep

pytestmark = pytest.mark.ray
RESOURCES = {"cpus": 1, "mem_gb": 0.5}


def quiet(*_args, **_kwargs):
    pass


def trial_runs(store, name: str) -> list:
    ledger = store.ledger()
    return ledger.runs(ledger.experiment_id(name), role="trial")


def journal_end(path: Path) -> dict:
    return [r for r in read_journal(path / "journal.jsonl")[0] if r["event"] == "end"][-1]


def test_asha_sweep_stops_trials_early_records_all_under_one_parent_and_best_yaml_runs(store, ray_local):
    offsets = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]  # trials arrive best first: later ones fall below ASHA's cutoffs
    spec = store.spec(
        {
            "name": "asha",
            "workload": "smoke",
            "params": {"steps": 12, "noise": 0.01},
            "resources": RESOURCES,
            "tune": {
                "metric": "final_loss",
                "report": "loss",
                "max_concurrent": 2,
                "scheduler": {"type": "asha", "grace_period": 2, "max_t": 12, "reduction_factor": 2},
                "space": {"offset": {"grid": offsets}},
            },
        }
    )
    best_path = store.root / "best.yaml"
    result = run_sweep(spec, tracking_uri=store.uri, best_path=best_path, echo=quiet)

    statuses = {row.config["offset"]: row.status for row in result.rows}
    assert sorted(statuses) == offsets
    assert "STOPPED" in statuses.values() and statuses[0.0] == "FINISHED"
    assert result.best.config == {"offset": 0.0}

    runs = trial_runs(store, "asha")
    assert len(runs) == 6 and {r.tags["mlflow.parentRunId"] for r in runs} == {result.parent_run_id}
    by_trial = {r.tags["orch.tune.trial_id"]: r for r in runs}
    for row in result.rows:
        record = by_trial[row.trial_id]
        if row.status == "STOPPED":
            assert record.status == "KILLED" and record.tags["orch.tune.early_stopped"] == "true"
            assert "score" not in record.metrics
        else:
            assert record.status == "FINISHED" and record.metrics["score"] == pytest.approx(row.score)
    history = store.ledger().client.get_metric_history(by_trial[result.best.trial_id].run_id, "loss")
    assert sorted(m.step for m in history) == list(range(12))
    parent = store.ledger().get(result.parent_run_id)
    assert parent.status == "FINISHED" and parent.tags["orch.role"] == "sweep"
    assert parent.metrics["best_final_loss"] == pytest.approx(result.best.score)

    # orch status shows the sweep: its trials by outcome and the best one
    (sweep,) = json.loads(store.orch("status", "asha", "--json", check=True).output)["sweeps"]
    counts = {s: sum(row.status == s for row in result.rows) for s in ("FINISHED", "STOPPED", "FAILED")}
    assert (sweep["status"], sweep["finished"], sweep["stopped_early"], sweep["failed"], sweep["running"]) == (
        "FINISHED",
        counts["FINISHED"],
        counts["STOPPED"],
        counts["FAILED"],
        0,
    )
    assert sweep["best_trial"] == result.best.trial_id and sweep["best_score"] == pytest.approx(result.best.score)
    table = store.orch("status", "asha", check=True).output
    assert "sweeps" in table and f"best trial {result.best.trial_id}" in table

    # best.yaml is a complete spec, validated on seeds the sweep never saw (it used seed 0): 1 and 2; its
    # seed 0, run again, reproduces the trial's score exactly
    best = load_spec(best_path)
    assert best.tune is None and best.params["offset"] == 0.0 and best.name == "asha-best"
    assert best.seeds.base == 1 and "none the sweep saw" in best_path.read_text()
    assert best.tuning is not None and best.tuning.trials == len(result.rows) and best.tuning.sweep == result.sweep
    store.orch("submit", str(best_path), "--seeds", "2", check=True)
    seeds = {r.tags["orch.seed"]: r for r in store.seed_runs("asha-best")}
    assert {s: r.status for s, r in seeds.items()} == {"1": "FINISHED", "2": "FINISHED"}
    store.orch("run", str(best_path), "--seed", "0", check=True)
    again = {r.tags["orch.seed"]: r for r in store.seed_runs("asha-best")}["0"]
    assert again.metrics["final_loss"] == result.best.score


def test_grid_is_covered_exactly_failing_trials_do_not_stop_the_sweep_and_scores_are_seed_means(
    store, ray_local, capfd
):
    spec = store.spec(
        {
            "name": "grid",
            "workload": "smoke",
            "params": {"steps": 5, "noise": 0.3},
            "resources": RESOURCES,
            "tune": {
                "metric": "final_loss",
                "report": "loss",
                "search": "grid",
                "seeds_per_trial": 2,
                "space": {"offset": {"grid": [0.0, 0.5]}, "fail_at_step": {"grid": [None, 3]}},
            },
        }
    )
    result = run_sweep(spec, tracking_uri=store.uri, best_path=store.root / "best.yaml", echo=quiet)

    points = sorted((r.config["offset"], r.config["fail_at_step"] or -1) for r in result.rows)
    assert points == [(0.0, -1), (0.0, 3), (0.5, -1), (0.5, 3)]
    for row in result.rows:
        if row.config["fail_at_step"] == 3:
            assert row.status == "FAILED" and "failing at step 3" in row.error
        else:
            assert row.status == "FINISHED"
            finals = [
                journal_end(result.path / "runs" / row.trial_id / f"seed{s}")["final"]["final_loss"] for s in (0, 1)
            ]
            assert finals[0] != finals[1] and row.score == pytest.approx(statistics.fmean(finals))
    assert result.best.config == {"offset": 0.0, "fail_at_step": None}
    records = {r.tags["orch.tune.trial_id"]: r for r in trial_runs(store, "grid")}
    assert len(records) == 4
    for row in result.rows:
        expected = "FAILED" if row.status == "FAILED" else "FINISHED"
        assert records[row.trial_id].status == expected
        if expected == "FAILED":
            assert "fail_at_step" in records[row.trial_id].tags["orch.error"]
    progress = [line for line in capfd.readouterr().out.splitlines() if line.strip().startswith("trial ")]
    assert len(progress) == 4  # one line per trial as it ended, while the sweep ran
    assert (
        sum("finished: final_loss" in line for line in progress) == 2
        and sum("failed:" in line for line in progress) == 2
    )


def test_resume_after_the_driver_is_killed(store, ray_local, tmp_path):
    offsets = [0.0, 0.5, 1.0]  # trials 0 and 1 run together and finish; the driver is killed during trial 2
    spec = store.spec(
        {
            "name": "resume",
            "workload": "smoke",
            "params": {"steps": 30, "sleep_s": 0.2, "noise": 0.2},
            "resources": RESOURCES,
            "tune": {
                "metric": "final_loss",
                "report": "loss",
                "max_concurrent": 2,
                "checkpoint_every_s": 0,  # every report also carries the checkpoint to Tune
                "space": {"offset": {"grid": offsets}},
            },
        }
    )
    best = store.root / "best.yaml"
    # the drivers join the session's Ray (an existing cluster, as on a lab's head node): no Ray start per driver
    address = ray_local.get_runtime_context().gcs_address
    args = ("tune", str(spec), "--tracking-uri", store.uri, "--best", str(best), "--ray-address", address)
    driver = store.orch_process(*args, start_new_session=True)
    runs_root = store.workdir / "resume" / "tune"

    def journals() -> list[list[dict]]:
        return [read_journal(p)[0] for p in runs_root.glob("*/runs/*/seed0/journal.jsonl")]

    def one_done_one_midway() -> bool:
        if driver.poll() is not None:
            raise AssertionError(f"the driver ended early ({driver.returncode}):\n{driver.stdout.read()}")
        states = [[e["event"] for e in j] for j in journals()]
        return any("end" in s for s in states) and any("end" not in s and 3 <= s.count("metrics") <= 15 for s in states)

    try:
        wait_for(one_done_one_midway, 180, "a finished trial and one halfway")
    finally:
        driver.send_signal(signal.SIGKILL)  # the driver dies; Ray stops the trials it owned
        driver.wait(30)
        stop_group(driver, timeout=5)
    midway = [
        p.parents[1].name
        for p in runs_root.glob("*/runs/*/seed0/journal.jsonl")
        if "end" not in (events := [e["event"] for e in read_journal(p)[0]]) and "checkpoint" in events
    ]
    assert midway and not best.exists() and list(runs_root.glob(f"*/*{midway[0]}*/checkpoint_*")), [
        [(e["event"], e.get("status"), e.get("error")) for e in j if e["event"] not in ("metrics", "checkpoint")]
        for j in journals()
    ]

    resumed = store.orch_process(*args, "--resume")
    out, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, out
    assert "resuming sweep" in out and best.exists()

    records = trial_runs(store, "resume")
    assert len(records) == 3 and {r.status for r in records} == {"FINISHED"}, [  # one run per trial, none repeated
        r.tags.get("orch.error") for r in records
    ]
    assert len(store.ledger().runs(store.ledger().experiment_id("resume"), role="sweep")) == 1
    # the interrupted trial continued from its checkpoint to the result of an uninterrupted run
    trial_dir = next(runs_root.glob(f"*/runs/{midway[0]}/seed0"))
    starts = [e for e in read_journal(trial_dir / "journal.jsonl")[0] if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from_step"] is not None
    fresh = _uninterrupted(trial_dir, tmp_path)
    assert journal_end(trial_dir)["final"]["final_loss"] == fresh
    assert yaml.safe_load(best.read_text())["params"]["offset"] == 0.0


def _uninterrupted(trial_dir: Path, tmp_path: Path) -> float:
    """The same run (params, seed) from scratch, in a subprocess so it cannot share state with this one."""
    import json

    job = json.loads((trial_dir / "run.json").read_text())
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "run.json").write_text(
        json.dumps({**job, "run": {**job["run"], "params": {**job["run"]["params"], "sleep_s": 0.0}}})
    )
    subprocess.run([os.sys.executable, "-m", "orchestrator.job.worker", str(fresh)], check=True, timeout=120)
    return journal_end(fresh)["final"]["final_loss"]


def test_the_live_trial_table_sees_every_trial_run_and_end(store, ray_local, capfd):
    import copy

    from rich.console import Console

    from orchestrator import render_tune as render

    spec = store.spec(
        {
            "name": "board",
            "workload": "smoke",
            "params": {"steps": 6, "sleep_s": 0.05},
            "resources": RESOURCES,
            "tune": {
                "metric": "final_loss",
                "report": "loss",
                "search": "grid",
                "space": {"offset": {"grid": [0.0, 0.5]}, "fail_at_step": {"grid": [None, 4]}},
            },
        }
    )
    seen: list[list] = []
    board = render.TrialBoard()

    def sink(trials, metric):
        seen.append(copy.deepcopy(trials))
        board(trials, metric)

    with board:
        result = run_sweep(spec, tracking_uri=store.uri, best_path=None, echo=quiet, sink=sink)
    assert len(result.rows) == 4
    running = [t for snapshot in seen for t in snapshot if t.status == "RUNNING" and t.reports > 0]
    assert running and all("loss" in t.latest for t in running)  # progress while trials ran, not only at the end
    final = {t.trial_id: t.status for t in seen[-1]}
    assert sorted(final.values()) == ["FAILED", "FAILED", "FINISHED", "FINISHED"]
    assert "ended)" not in capfd.readouterr().out  # the table replaces the one-line-per-trial progress
    drawn = Console(record=True, width=160)
    drawn.print(board._view())
    text = drawn.export_text()
    assert "2 finished, 2 failed" in text and all(t.trial_id in text for t in seen[-1]) and "final_loss" in text


def test_optuna_searches_three_seeds_per_trial_on_a_two_cpu_cluster(store, ray_local):
    """The lab's random50 sweep as it is set up (configs/evo_topo_random50_tune.yaml): Optuna's TPE, whose
    per-step reports lack the final metric, and 3 seeds of 1 CPU per trial on 2 CPUs, which Ray would wait on
    forever as one placement group: the seeds run in waves, each trial's score the mean of its 3 seeds."""
    spec = store.spec(
        {
            "name": "tpe",
            "workload": "smoke",
            "params": {"steps": 4, "noise": 0.1},
            "resources": RESOURCES,
            "tune": {
                "metric": "final_loss",
                "report": "loss",
                "search": "optuna",
                "num_samples": 4,
                "seeds_per_trial": 3,
                "space": {"offset": {"uniform": [0.0, 1.0]}},
            },
        }
    )
    said: list[str] = []
    result = run_sweep(
        spec, tracking_uri=store.uri, best_path=None, echo=lambda *a, **_: said.append(" ".join(map(str, a)))
    )
    assert any("they run 2 at a time" in line for line in said)
    assert [r.status for r in result.rows] == ["FINISHED"] * 4
    offsets = {r.config["offset"] for r in result.rows}
    assert len(offsets) == 4  # TPE proposed 4 points
    for row in result.rows:
        finals = [
            journal_end(result.path / "runs" / row.trial_id / f"seed{s}")["final"]["final_loss"] for s in (0, 1, 2)
        ]
        assert row.score == pytest.approx(statistics.fmean(finals))
