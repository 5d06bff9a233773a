"""PBT's settings and a spec's `schedule:` are checked before anything runs (file, field, what was expected;
exit 2, nothing created), the checkpoint contract included; a schedule is replayed by the ordinary worker,
phase by phase, and a scheduled run resumed after a kill ends as an uninterrupted one. No Ray in this file."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_for

from orchestrator.errors import InputError
from orchestrator.job.journal import read_journal
from orchestrator.spec.plan import expand
from orchestrator.spec.spec import load_spec
from orchestrator.tune.section import parse_tune

BASE = {"name": "p", "workload": "smoke", "params": {"steps": 8}}
PBT = {"type": "pbt", "perturbation_interval": 4}


def tune_error(store, tune: dict, **extra) -> InputError:
    with pytest.raises(InputError) as info:
        parse_tune(load_spec(store.spec({**BASE, **extra, "tune": tune})))
    return info.value


def test_pbt_mutates_the_space_by_default_and_knows_the_checkpoint_interval(store):
    spec = load_spec(store.spec({**BASE, "tune": {"scheduler": PBT, "space": {"offset": {"uniform": [0, 1]}}}}))
    config = parse_tune(spec)
    assert [d.key for d in config.mutations] == ["offset"] and config.checkpoint_every == 1
    spec = load_spec(
        store.spec(
            {
                **BASE,
                "params": {"steps": 8, "checkpoint_every": 2},
                "tune": {
                    "scheduler": {**PBT, "mutations": {"noise": {"choice": [0.0, 0.1]}}},
                    "space": {"offset": {"grid": [0.0, 1.0]}},
                },
            }
        )
    )
    config = parse_tune(spec)
    assert [(d.key, d.kind) for d in config.mutations] == [("noise", "choice")] and config.checkpoint_every == 2


SPACE = {"offset": {"uniform": [0, 1]}}


@pytest.mark.parametrize(
    "tune, extra, field, words",
    [
        ({"scheduler": "pbt", "space": SPACE}, {}, "tune.scheduler", "perturbation_interval"),
        ({"scheduler": {"type": "pbt"}, "space": SPACE}, {}, "tune.scheduler.perturbation_interval", "required"),
        (
            {"scheduler": {**PBT, "perturbation_interval": 5}, "space": SPACE},
            {"params": {"steps": 8, "checkpoint_every": 2}},
            "tune.scheduler.perturbation_interval",
            "multiple of the workload's checkpoint interval (2 steps)",
        ),
        ({"scheduler": PBT, "seeds_per_trial": 2, "space": SPACE}, {}, "tune.seeds_per_trial", "seeds_per_trial: 1"),
        ({"scheduler": PBT, "search": "optuna", "space": SPACE}, {}, "tune.search", "not a searcher"),
        (
            {"scheduler": {**PBT, "mutations": {"ofset": {"uniform": [0, 1]}}}, "space": SPACE},
            {},
            "tune.scheduler.mutations.ofset",
            "did you mean 'offset'",
        ),
        (
            {"scheduler": {**PBT, "mutations": {"noise": {"uniform": [-1, 1]}}}, "space": SPACE},
            {},
            "tune.scheduler.mutations.noise.uniform[0]",
            "greater than or equal to 0",
        ),
        ({"scheduler": {**PBT, "mutations": {}}, "space": SPACE}, {}, "tune.scheduler.mutations", "empty"),
        (
            {"scheduler": PBT, "space": {"checkpoint_every": {"choice": [1, 2]}}},
            {},
            "tune.space.checkpoint_every",
            "checkpoint interval",
        ),
        (
            {"scheduler": {**PBT, "quantile_fraction": 0.7}, "space": SPACE},
            {},
            "tune.scheduler.quantile_fraction",
            "0.5",
        ),
        (
            {"scheduler": {**PBT, "perturbation_factors": [1.2, -1]}, "space": SPACE},
            {},
            "tune.scheduler.perturbation_factors",
            "> 0",
        ),
        ({"scheduler": PBT, "space": SPACE}, {"schedule": [{"step": 2, "params": {"offset": 1}}]}, "schedule", "sweep"),
    ],
)
def test_bad_pbt_settings_name_file_and_field(store, tune, extra, field, words):
    err = tune_error(store, tune, **extra)
    assert err.source.endswith("spec.yaml") and err.field == field and words in err.message, (err.field, str(err))


def test_a_workload_that_does_not_declare_checkpoints_is_refused_for_pbt(store, monkeypatch):
    (store.root / "nockpt.py").write_text(
        "from pydantic import BaseModel\n"
        "METRIC = 'loss'\n"
        "class Params(BaseModel):\n    lr: float = 0.1\n"
        "def run(params, ctx):\n    ctx.log(0, loss=params.lr)\n    return {'loss': params.lr}\n"
    )
    monkeypatch.chdir(store.root)
    spec = {"name": "n", "workload": "nockpt", "tune": {"scheduler": PBT, "space": {"lr": {"uniform": [0.1, 1]}}}}
    with pytest.raises(InputError) as info:
        parse_tune(load_spec(store.spec(spec)))
    assert info.value.field == "tune.scheduler" and "CHECKPOINT_EVERY" in info.value.message
    # the same sweep under ASHA needs no checkpoints
    parse_tune(load_spec(store.spec({**spec, "tune": {"scheduler": "asha", "space": {"lr": {"uniform": [0.1, 1]}}}})))


def test_the_population_counts_against_the_run_cap(store, monkeypatch):
    monkeypatch.setenv("ORCH_MAX_RUNS", "12")
    err = tune_error(store, {"scheduler": PBT, "num_samples": 13, "space": SPACE})
    assert err.field == "tune.num_samples" and "13 trials x 1 seeds = 13 runs, more than the limit of 12" in err.message
    err = tune_error(store, {"scheduler": PBT, "num_samples": 4, "space": {"offset": {"grid": [0, 0.2, 0.4, 0.6]}}})
    assert "16 trials" in err.message  # a population of 4 samples x a 4-point grid
    parse_tune(load_spec(store.spec({**BASE, "tune": {"scheduler": PBT, "num_samples": 12, "space": SPACE}})))


def test_cli_bad_pbt_exits_2_and_creates_nothing(store):
    path = store.spec({**BASE, "tune": {"scheduler": {**PBT, "perturbation_interval": 0}, "space": SPACE}})
    result = store.orch("tune", str(path), "--tracking-uri", store.uri, "--best", str(store.root / "best.yaml"))
    assert result.exit_code == 2, result.output
    assert "tune.scheduler.perturbation_interval" in result.output
    assert not (store.root / "mlflow.db").exists() and not store.workdir.exists()


# -- a spec's schedule: validated, part of the run's identity, replayed by the worker -------------------------


@pytest.mark.parametrize(
    "schedule, field, words",
    [
        ([{"step": 0, "params": {"offset": 1.0}}], "schedule[0].step", "a step after 0"),
        (
            [{"step": 4, "params": {"offset": 1.0}}, {"step": 4, "params": {"offset": 2.0}}],
            "schedule[1].step",
            "a step after 4",
        ),
        ([{"step": 4, "params": {"ofset": 1.0}}], "schedule[0].params.ofset", "did you mean 'offset'"),
        ([{"step": 4, "params": {"noise": -1}}], "schedule[0].params.noise", "greater than or equal to 0"),
        ([{"step": 4, "params": {}}], "schedule[0].params", "the params this phase changes"),
        ([{"step": 4, "set": {"noise": 1}}], "schedule[0]", "expected {step: N, params"),
    ],
)
def test_bad_schedules_name_file_and_field(store, schedule, field, words):
    path = store.spec({**BASE, "schedule": schedule})
    with pytest.raises(InputError) as info:
        expand(load_spec(path))
    assert info.value.field == field and words in info.value.message, (info.value.field, str(info.value))
    result = store.orch("submit", str(path), "--dry-run")
    assert result.exit_code == 2 and field in result.output


def test_a_schedule_is_part_of_the_run_key(store):
    plain = expand(load_spec(store.spec(BASE)))[0]
    scheduled = expand(load_spec(store.spec({**BASE, "schedule": [{"step": 4, "params": {"offset": 1.0}}]})))[0]
    again = expand(load_spec(store.spec({**BASE, "schedule": [{"step": 4, "params": {"offset": 1}}]})))[0]
    other = expand(load_spec(store.spec({**BASE, "schedule": [{"step": 5, "params": {"offset": 1.0}}]})))[0]
    assert plain.key != scheduled.key == again.key != other.key
    assert scheduled.schedule[0]["params"]["offset"] == 1.0 and scheduled.params["offset"] == 0.0


def journal(run_dir: Path) -> list[dict]:
    return read_journal(run_dir / "journal.jsonl")[0]


def test_a_schedule_is_replayed_phase_by_phase_and_resumes_like_any_run(store, tmp_path):
    schedule = [{"step": 10, "params": {"offset": 5.0}}, {"step": 20, "params": {"offset": 1.0, "noise": 0.0}}]
    spec = store.spec({**BASE, "params": {"steps": 30, "noise": 0.1}, "schedule": schedule})
    store.orch("run", str(spec), "--seed", "0", check=True)
    (run_dir,) = [p.parent for p in store.workdir.glob("p/*/run.json")]
    records = journal(run_dir)
    assert [(e["step"], e["params"]) for e in records if e["event"] == "phase"] == [
        (10, {"offset": 5.0}),
        (20, {"noise": 0.0, "offset": 1.0}),
    ]
    losses = {e["step"]: e["metrics"]["loss"] for e in records if e["event"] == "metrics"}
    assert sorted(losses) == list(range(30))  # each step once: a phase restarts right after its checkpoint
    assert all(losses[s] < 2 for s in range(10)) and all(losses[s] > 4.9 for s in range(10, 20))
    assert all(abs(losses[s] - 1.0 - math.exp(-3 * s / 30)) < 1e-12 for s in range(20, 30))

    # the same run, SIGKILLed in its second phase and run again: the same metrics as without the kill
    job = json.loads((run_dir / "run.json").read_text())
    slow = tmp_path / "slow"
    slow.mkdir()
    job["run"]["params"]["sleep_s"] = 0.05
    for phase in job["run"]["schedule"]:
        phase["params"]["sleep_s"] = 0.05
    (slow / "run.json").write_text(json.dumps(job))
    worker = [sys.executable, "-m", "orchestrator.job.worker", str(slow)]
    proc = subprocess.Popen(worker, start_new_session=True)
    try:
        wait_for(lambda: (slow / "journal.jsonl").exists() and len(_steps(slow)) >= 15, 60, "the second phase")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    subprocess.run(worker, check=True, timeout=120)
    resumed = journal(slow)
    assert [e["resumed_from_step"] for e in resumed if e["event"] == "start"][1] >= 13
    assert {e["step"]: e["metrics"]["loss"] for e in resumed if e["event"] == "metrics"} == losses
    assert [e for e in resumed if e["event"] == "end"][-1]["final"] == [e for e in records if e["event"] == "end"][-1][
        "final"
    ]


def _steps(run_dir: Path) -> list[int]:
    return [e["step"] for e in journal(run_dir) if e["event"] == "metrics"]


def test_pb2_takes_continuous_bounds_and_no_pbt_only_settings(store):
    """PB2 (Ray's, over scikit-learn's Gaussian process): the same contract as PBT; its bandit searches ranges,
    so a choice is refused, and
    PBT's random-explore settings have no meaning there."""
    from orchestrator.tune import pbt
    from orchestrator.tune.section import Pb2

    pb2 = {"type": "pb2", "perturbation_interval": 4}
    config = parse_tune(load_spec(store.spec({**BASE, "tune": {"scheduler": pb2, "space": SPACE}})))
    assert isinstance(config.section.scheduler, Pb2) and [d.key for d in config.mutations] == ["offset"]
    made = pbt.scheduler(config)
    assert type(made).__name__ == "PB2" and made._hyperparam_bounds == {"offset": [0, 1]}
    error = tune_error(store, {"scheduler": pb2, "space": {"noise": {"choice": [0.0, 0.1]}}})
    assert error.field == "tune.space.noise" and "uniform, loguniform or randint" in str(error)
    error = tune_error(store, {"scheduler": {**pb2, "resample_probability": 0.5}, "space": SPACE})
    assert "resample_probability" in str(error) and "type: pbt" in str(error)
    error = tune_error(store, {"scheduler": "pb2", "space": SPACE})
    assert "perturbation_interval" in str(error)
    error = tune_error(
        store,
        {"scheduler": {**pb2, "perturbation_interval": 3}, "space": SPACE},
        params={"steps": 8, "checkpoint_every": 2},
    )
    assert error.field == "tune.scheduler.perturbation_interval"
