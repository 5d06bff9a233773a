"""The `tune:` section is validated like the rest of the spec, before Ray starts: bad distributions, bounds and
keys are errors naming the file and the field path (exit 2, nothing created). No Ray in this file."""

from __future__ import annotations

import pytest

from orchestrator.errors import InputError
from orchestrator.spec.spec import load_spec
from orchestrator.tune.section import parse_tune
from orchestrator.tune.trial import StepMeans

BASE = {"name": "t", "workload": "smoke", "params": {"steps": 5}}


def parse(store, tune: dict, **extra):
    path = store.spec({**BASE, **extra, "tune": tune})
    return parse_tune(load_spec(path)), path


def error(store, tune: dict, **extra) -> InputError:
    with pytest.raises(InputError) as info:
        parse(store, tune, **extra)
    return info.value


def test_valid_section_resolves_defaults_and_dimensions(store):
    config, _ = parse(
        store,
        {
            "scheduler": "asha",
            "space": {"offset": {"uniform": [0.0, 1.0]}, "noise": {"choice": [0.0, 0.1]}, "steps": {"randint": [2, 9]}},
        },
    )
    assert (config.metric, config.mode, config.report) == ("final_loss", "min", "final_loss")
    assert config.section.scheduler.type == "asha" and config.section.scheduler.grace_period == 1
    assert [(d.key, d.kind, d.args) for d in config.dimensions] == [
        ("offset", "uniform", (0.0, 1.0)),
        ("noise", "choice", (0.0, 0.1)),
        ("steps", "randint", (2, 9)),
    ]


@pytest.mark.parametrize(
    "tune, field, words",
    [
        ({"space": {"offset": {"unifrom": [0, 1]}}}, "tune.space.offset.unifrom", "did you mean 'uniform'"),
        ({"space": {"ofset": {"uniform": [0, 1]}}}, "tune.space.ofset", "did you mean 'offset'"),
        ({"space": {"offset": {"uniform": [1, 0]}}}, "tune.space.offset.uniform", "low must be below high"),
        ({"space": {"offset": {"uniform": [0, "x"]}}}, "tune.space.offset.uniform", "two numbers"),
        ({"space": {"noise": {"loguniform": [0, 1]}}}, "tune.space.noise.loguniform", "low > 0"),
        ({"space": {"steps": {"randint": [0, 5]}}}, "tune.space.steps.randint[0]", "greater than or equal to 1"),
        ({"space": {"steps": {"randint": [1.5, 5]}}}, "tune.space.steps.randint", "integers"),
        ({"space": {"noise": {"choice": [0.1, -1]}}}, "tune.space.noise.choice[1]", "greater than or equal to 0"),
        ({"space": {"noise": {"choice": []}}}, "tune.space.noise.choice", "non-empty"),
        ({"space": {"noise": {"uniform": [0, 1], "choice": [1]}}}, "tune.space.noise", "one distribution"),
        ({"search": "grid", "space": {"noise": {"uniform": [0, 1]}}}, "tune.space.noise.uniform", "not a grid"),
        (
            {"search": "grid", "num_samples": 3, "space": {"noise": {"grid": [0, 1]}}},
            "tune.num_samples",
            "exactly once",
        ),
        ({"search": "bayes", "space": {"noise": {"grid": [0, 1]}}}, "tune.search", "random"),
        ({"scheduler": "ashaa", "space": {"noise": {"grid": [0, 1]}}}, "tune.scheduler", "did you mean 'asha'"),
        (
            {"scheduler": {"type": "asha", "grace_period": 9, "max_t": 3}, "space": {"noise": {"grid": [0]}}},
            "tune.scheduler",
            "grace_period (9) must be <= max_t (3)",
        ),
        ({"seeds_per_trial": 0, "space": {"noise": {"grid": [0]}}}, "tune.seeds_per_trial", "greater than 0"),
        ({"spaces": {}}, "tune.spaces", "unknown field"),
        ({"space": {}}, "tune.space", "at least one param"),
    ],
)
def test_bad_tune_section_names_file_and_field(store, tune, field, words):
    err = error(store, tune)
    assert err.source.endswith("spec.yaml")
    assert err.field == field, str(err)
    assert words in err.message, str(err)


def test_optuna_missing_is_an_input_error_not_a_crash(store):
    import importlib.util

    if importlib.util.find_spec("optuna") is not None:
        config, _ = parse(store, {"search": "optuna", "space": {"noise": {"uniform": [0, 1]}}})
        assert config.section.search == "optuna"
    else:
        err = error(store, {"search": "optuna", "space": {"noise": {"uniform": [0, 1]}}})
        assert err.field == "tune.search" and "pip install optuna" in err.message


def test_sweeps_refuse_variants_and_missing_section(store):
    err = error(store, {"space": {"noise": {"grid": [0]}}}, variants={"a": {"offset": 1.0}})
    assert err.field == "variants"
    with pytest.raises(InputError) as info:
        parse_tune(load_spec(store.spec(BASE)))
    assert info.value.field == "tune"


def test_cli_bad_tune_exits_2_and_creates_nothing(store):
    path = store.spec({**BASE, "tune": {"space": {"offset": {"normal": [0, 1]}}}})
    result = store.orch("tune", str(path), "--tracking-uri", store.uri, "--best", str(store.root / "best.yaml"))
    assert result.exit_code == 2, result.output
    assert "tune.space.offset.normal" in result.output and "unknown distribution" in result.output
    assert not (store.root / "mlflow.db").exists() and not store.workdir.exists()
    assert not (store.root / "best.yaml").exists()


def test_step_means_wait_for_every_seed_and_skip_replays():
    means = StepMeans(2)
    assert means.add(0, 0, {"loss": 1.0}) == []
    assert means.add(0, 1, {"loss": 3.0}) == []
    assert means.add(1, 0, {"loss": 2.0, "extra": 5.0}) == [(0, {"loss": 1.5})]  # only keys both seeds logged
    assert means.add(1, 1, {"loss": 5.0}) == [(1, {"loss": 4.0})]
    assert means.add(0, 1, {"loss": 3.0}) == []  # a resumed seed replays step 1: already reported


def test_step_means_report_a_step_logged_twice_with_new_metrics():
    means = StepMeans(1)
    assert means.add(0, 9, {"train_loss": 0.5}) == [(9, {"train_loss": 0.5})]
    assert means.add(0, 9, {"eval_err": 0.2}) == [(9, {"eval_err": 0.2, "train_loss": 0.5})]
    assert means.add(0, 19, {"train_loss": 0.4}) == [(19, {"train_loss": 0.4})]


@pytest.mark.parametrize(
    "tune, field, words",
    [
        (
            {"num_samples": 1_000_000_000, "space": {"offset": {"uniform": [0, 1]}}},
            "tune.num_samples",
            "1,000,000,000 trials x 1 seeds",
        ),
        (
            {
                "search": "grid",
                "space": {"offset": {"grid": list(range(10_001))}, "noise": {"grid": list(range(10_001))}},
            },
            "tune.space",
            "100,020,001 trials",
        ),
        (
            {"seeds_per_trial": 1e9, "space": {"offset": {"uniform": [0, 1]}}},
            "tune.seeds_per_trial",
            "10 trials x 1,000,000,000",
        ),
        (
            {"metric": "finall_loss", "space": {"offset": {"uniform": [0, 1]}}},
            "tune.metric",
            "did you mean 'final_loss'",
        ),
        ({"report": "los", "space": {"offset": {"uniform": [0, 1]}}}, "tune.report", "never reports 'los'"),
    ],
)
def test_budget_and_unknown_metrics_are_refused_before_ray_starts(store, tune, field, words):
    err = error(store, tune)
    assert err.field == field and words in err.message, (err.field, err.message)


def test_the_budget_cap_is_the_submit_cap(store, monkeypatch):
    monkeypatch.setenv("ORCH_MAX_RUNS", "20")
    tune = {"num_samples": 7, "seeds_per_trial": 3, "space": {"offset": {"uniform": [0, 1]}}}
    assert "21 runs, more than the limit of 20" in error(store, tune).message
    monkeypatch.setenv("ORCH_MAX_RUNS", "21")
    parse(store, tune)


def test_the_random50_sweep_validates():
    from pathlib import Path

    spec = load_spec(Path(__file__).resolve().parent.parent / "configs" / "evo_topo_random50_tune.yaml")
    config = parse_tune(spec)
    assert spec.seeds.base >= 10  # disjoint from the seeds 0-9 the presets are validated on
    assert config.metric == "test_accuracy" and config.mode == "max" and config.section.search == "optuna"
    assert config.section.seeds_per_trial >= 3
    keys = {d.key for d in config.dimensions}
    assert {"sr", "leak", "input_scaling", "eta", "beta", "epsilon_decay"} <= keys
