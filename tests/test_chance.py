"""A workload's chance levels (``CHANCE``): recorded on its groups at submit, marked by `orch compare` in
the report, the JSON and the plot, so that a group at chance is seen as such without reading the docs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

GUESSER = """
from pydantic import BaseModel, ConfigDict

METRIC, MODE = "acc", "max"
CHANCE = {chance}


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid")
    skill: float = 0.0


def run(params, ctx):
    noise = ((ctx.seed * 7919) % 13 - 6) / 300  # seeded spread around the group's level
    for step in range(2):
        ctx.log(step, acc=0.25 + params.skill * step + noise)
    return {{"acc": 0.25 + params.skill + noise}}
"""


def _guesser(store, chance: str) -> str:
    name = f"guesser_{store.root.name.replace('-', '_')[:30]}"
    (store.root / f"{name}.py").write_text(GUESSER.format(chance=chance))
    return name


def _spec(store, module: str):
    return store.spec(
        {
            "name": "guess",
            "workload": module,
            "seeds": 5,
            "variants": {"random": {"skill": 0.0}, "learned": {"skill": 0.3}},
        }
    )


def test_compare_marks_the_declared_chance_level(store, monkeypatch):
    monkeypatch.chdir(store.root)
    store.orch("submit", str(_spec(store, _guesser(store, '{"acc": 0.25}'))), check=True)
    ledger = store.ledger()
    parents = ledger.runs(ledger.experiment_id("guess"), role="group")
    assert len(parents) == 2 and {json.loads(p.tags["orch.chance"])["acc"] for p in parents} == {0.25}

    result = store.orch("compare", "guess", "--baseline", "random", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output[result.output.index("{") :])
    assert out["chance"] == 0.25
    at_chance = [n for n in out["notes"] if "at chance" in n]
    assert len(at_chance) == 1 and "`random`" in at_chance[0] and "0.25" in at_chance[0]

    text = store.orch("compare", "guess", "--baseline", "random").output
    assert "chance level of acc (declared by the workload): 0.25" in text
    assert "random is at chance on acc" in text and "learned is at chance" not in text


def test_the_plot_draws_the_chance_line(store, monkeypatch, tmp_path):
    from orchestrator.analysis import compare, plots

    monkeypatch.chdir(store.root)
    store.orch("submit", str(_spec(store, _guesser(store, '{"acc": 0.25}'))), check=True)
    report = compare.run_compare(store.ledger(), "guess", baseline="random")
    with_line = plots.final_metric(report, tmp_path / "with.png").read_bytes()
    report.chance = {}
    without = plots.final_metric(report, tmp_path / "without.png").read_bytes()
    assert with_line != without


@pytest.mark.parametrize("chance", ['{"acc": "a quarter"}', "[0.25]", '{"acc": float("nan")}'])
def test_a_bad_chance_declaration_is_refused_before_anything_is_written(store, monkeypatch, chance):
    monkeypatch.chdir(store.root)
    result = store.orch("submit", str(_spec(store, _guesser(store, chance))))
    assert result.exit_code == 2 and "CHANCE must map metric names to finite numbers" in result.output
    assert not Path(store.workdir).exists() or not any(Path(store.workdir).rglob("journal.jsonl"))
