"""Population Based Training in `orch tune`, on a real Ray and a real MLflow store: exploitation happens and is
recorded (the exploited trial restarts from the donor's checkpointed step, tagged with the donor), best.yaml
holds the winner's schedule, `orch submit` replays it over fresh seeds (and on the sweep's seed reproduces the
trial's score exactly), and a sweep resumes after its driver is killed."""

from __future__ import annotations

import itertools
import json
import signal
from pathlib import Path

import pytest
import yaml
from support import stop_group, wait_for

from orchestrator.job.journal import read_journal
from orchestrator.spec.spec import load_spec
from orchestrator.tune.sweep import run_sweep

pytestmark = pytest.mark.ray
RESOURCES = {"cpus": 1, "mem_gb": 0.5}


def pbt_spec(store, name: str, steps: int = 16, sleep_s: float = 0.05) -> Path:
    """Four trials; lower offsets are better and each exploitation halves the donor's offset (factors 0.5,
    no resampling): exploitation must happen, and it always improves on the donor."""
    return store.spec(
        {
            "name": name,
            "workload": "smoke",
            "params": {"steps": steps, "noise": 0.01, "sleep_s": sleep_s},
            "resources": RESOURCES,
            "tune": {
                "metric": "final_loss",
                "report": "loss",
                "max_concurrent": 2,
                "scheduler": {
                    "type": "pbt",
                    "perturbation_interval": 4,
                    "quantile_fraction": 0.25,
                    "resample_probability": 0.0,
                    "perturbation_factors": [0.5, 0.5],
                    "mutations": {"offset": {"uniform": [0.0, 1.0]}},
                },
                "space": {"offset": {"grid": [0.4, 0.6, 0.8, 1.0]}},
                "checkpoint_every_s": 0,
            },
        }
    )


def events(run_dir: Path) -> list[dict]:
    return read_journal(run_dir / "journal.jsonl")[0]


def test_pbt_exploits_records_the_lineage_and_best_yaml_replays_the_schedule(store, ray_local):
    spec = pbt_spec(store, "pbt")
    best_path = store.root / "best.yaml"
    result = run_sweep(spec, tracking_uri=store.uri, best_path=best_path, echo=lambda *a, **k: None)

    assert len(result.rows) == 4 and {r.status for r in result.rows} == {"FINISHED"}
    ids = {r.trial_id for r in result.rows}
    exploited = [r for r in result.rows if len(r.schedule) > 1]
    assert exploited, [r.schedule for r in result.rows]

    # MLflow: the exploited trials say from which trial and at which step, and their params over time
    ledger = store.ledger()
    records = {r.tags["orch.tune.trial_id"]: r for r in ledger.runs(ledger.experiment_id("pbt"), role="trial")}
    tagged = {t: r for t, r in records.items() if "orch.tune.pbt.exploited_from" in r.tags}
    assert tagged and set(tagged) <= ids
    for trial_id, record in tagged.items():
        donor, step = record.tags["orch.tune.pbt.exploited_from"], int(record.tags["orch.tune.pbt.exploited_at_step"])
        assert donor in ids and donor != trial_id and step >= 3
        # the trial's run directory: the donor's checkpoint adopted, the run resumed right after its step
        run_dir = result.path / "runs" / trial_id / "seed0"
        journal = events(run_dir)
        phases = [e for e in journal if e["event"] == "phase"]
        assert phases and phases[-1]["from_trial"] == donor and phases[-1]["step"] == step + 1
        resumed = [e["resumed_from_step"] for e in journal if e["event"] == "start"]
        assert step in resumed
        offsets = ledger.client.get_metric_history(record.run_id, "pbt/offset")
        assert len({round(m.value, 9) for m in offsets}) >= 2  # the offset it ran with changed over time
        assert "schedule.json" in {a.path for a in ledger.client.list_artifacts(record.run_id)}
        exploits = json.loads((run_dir.parent / "schedule.json").read_text())["exploits"]
        steps = [e["step"] for e in exploits]  # each a new perturbation: a pause after one is not another
        assert steps == sorted(set(steps)) and int(record.tags["orch.tune.pbt.exploits"]) == len(exploits)
    # each exploitation halved the donor's offset: the winner's schedule goes down in halves
    best = result.best
    assert best is not None and best.schedule is not None
    values = [phase["params"]["offset"] for phase in best.schedule]
    assert all(b == pytest.approx(a / 2) for a, b in itertools.pairwise(values)), values

    # best.yaml: the winner's first params and its schedule; on the sweep's seed it reproduces the trial's
    # score exactly, and orch submit replays it over three fresh seeds
    doc = yaml.safe_load(best_path.read_text())
    assert doc["params"]["offset"] == best.schedule[0]["params"]["offset"]
    assert [p["step"] for p in doc.get("schedule", [])] == [p["step"] for p in best.schedule[1:]]
    assert "PBT schedule" in best_path.read_text() or len(best.schedule) == 1
    assert load_spec(best_path).seeds.base == 1
    store.orch("run", str(best_path), "--seed", "0", check=True)
    store.orch("submit", str(best_path), "--seeds", "3", check=True)
    seeds = {r.tags["orch.seed"]: r for r in store.seed_runs("pbt-best") if r.tags.get("orch.role") == "seed"}
    assert seeds["0"].metrics["final_loss"] == best.score
    assert {s: r.status for s, r in seeds.items()} == dict.fromkeys(("0", "1", "2", "3"), "FINISHED")
    if len(best.schedule) > 1:  # the replayed runs switched params where the trial's lineage did
        run_dir = Path(seeds["1"].tags["orch.run_dir"])
        switched = [e["step"] for e in events(run_dir) if e["event"] == "phase"]
        assert switched == [p["step"] for p in best.schedule[1:]]


def test_pbt_sweep_resumes_after_its_driver_is_killed(store, ray_local):
    spec = pbt_spec(store, "pbt-resume", steps=24, sleep_s=0.3)
    best = store.root / "best.yaml"
    address = ray_local.get_runtime_context().gcs_address
    args = ("tune", str(spec), "--tracking-uri", store.uri, "--best", str(best), "--ray-address", address)
    driver = store.orch_process(*args, start_new_session=True)
    runs_root = store.workdir / "pbt-resume" / "tune"

    def an_exploitation() -> bool:
        if driver.poll() is not None:
            raise AssertionError(f"the driver ended early ({driver.returncode}):\n{driver.stdout.read()}")
        return any(len(json.loads(p.read_text())["exploits"]) for p in runs_root.glob("*/runs/*/schedule.json"))

    try:
        wait_for(an_exploitation, 240, "a trial exploited by another")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
        stop_group(driver, timeout=5)
    assert not best.exists()

    resumed = store.orch_process(*args, "--resume")
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out
    assert "resuming sweep" in out and best.exists()
    ledger = store.ledger()
    records = ledger.runs(ledger.experiment_id("pbt-resume"), role="trial")
    errors = [r.tags.get("orch.error") for r in records]
    assert len(records) == 4 and {r.status for r in records} == {"FINISHED"}, errors
    assert any("orch.tune.pbt.exploited_from" in r.tags for r in records)
    for path in runs_root.glob("*/runs/*/seed0"):  # every trial reached its last step
        assert [e for e in events(path) if e["event"] == "end"][-1]["status"] == "FINISHED"


def test_pb2_exploits_through_the_same_checkpoint_contract(store, ray_local):
    """PB2 on a real Ray: the bottom trials restart from a top trial's checkpoint with values its bandit chose
    within the bounds, recorded as PBT's are; best.yaml replays the winner's schedule."""
    spec = pbt_spec(store, "pb2")
    doc = yaml.safe_load(spec.read_text())
    doc["tune"]["scheduler"] = {"type": "pb2", "perturbation_interval": 4, "quantile_fraction": 0.25}
    doc["tune"]["space"] = {"offset": {"uniform": [0.0, 1.0]}}
    doc["tune"]["num_samples"] = 4
    spec.write_text(yaml.safe_dump(doc))
    best_path = store.root / "best-pb2.yaml"
    result = run_sweep(spec, tracking_uri=store.uri, best_path=best_path, echo=lambda *a, **k: None)
    assert len(result.rows) == 4 and {r.status for r in result.rows} == {"FINISHED"}
    ledger = store.ledger()
    records = ledger.runs(ledger.experiment_id("pb2"), role="trial")
    exploited = [r for r in records if "orch.tune.pbt.exploited_from" in r.tags]
    assert exploited, [r.tags for r in records]
    for record in exploited:  # the bandit's values stay within the bounds
        run_dir = result.path / "runs" / record.tags["orch.tune.trial_id"] / "seed0"
        phases = [e for e in events(run_dir) if e["event"] == "phase"]
        assert phases and all(0.0 <= p["params"]["offset"] <= 1.0 for p in phases), phases
    best = load_spec(best_path)
    assert best.tuning is not None and best.tuning.trials == 4
