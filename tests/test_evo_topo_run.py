"""evo_topo end to end: population evaluation, a short search that improves, determinism, resume after a
kill, the random baseline, speciation and the online readout; through the real worker."""

import json

import numpy as np
import pytest

from orchestrator import worker
from orchestrator.context import RunContext
from orchestrator.journal import JournalWriter, read_journal
from orchestrator.plan import Run
from orchestrator.rundir import RunDir
from workloads.evo_topo import Params, run
from workloads.evo_topo.evaluate import EvalConfig, EvalData, PopulationEvaluator, fitness
from workloads.evo_topo.genome import CellLaw, random_genome

SMALL = dict(population=10, generations=6, max_neurons=6, p_add_neuron=0.5, n_train=144, n_val=72, n_test=72,
             eval_draws=2)


def _execute(tmp_path, params, seed=0, name="r"):
    rd = RunDir(tmp_path / name)
    rd.create({"run": Run("evo_topo", params, seed, "v").to_dict(), "run_id": "x", "experiment_id": "0",
               "cpus": 1, "gpus": 0})
    status = worker.execute(rd.path)
    records, _ = read_journal(rd.journal)
    end = [r for r in records if r["event"] == "end"][-1]
    assert status == "FINISHED", end
    steps = [r for r in records if r["event"] == "metrics"]
    return end["final"], steps, rd


def test_padded_population_equals_one_by_one_and_parallel_split():
    rng = np.random.default_rng(0)
    pop = [random_genome(int(n), rng, CellLaw("continuous")) for n in (1, 4, 9, 2, 7, 3)]
    data = EvalData.draw(72, 72, [0, 1])
    cfg = EvalConfig()
    together = fitness(pop, data, cfg)
    alone = np.array([fitness([g], data, cfg)[0] for g in pop])
    np.testing.assert_array_equal(together, alone)
    assert len(set(together)) > 2  # distinct genomes, distinct scores: the check can fail
    evaluator = PopulationEvaluator(data, cfg, workers=2)
    try:
        np.testing.assert_array_equal(evaluator(pop), together)
    finally:
        evaluator.close()


def test_short_search_improves_and_writes_artifacts(tmp_path):
    final, steps, rd = _execute(tmp_path, SMALL)
    assert [s["step"] for s in steps] == list(range(6))
    metrics = [s["metrics"] for s in steps]
    for m in metrics:
        assert set(m) == {"best_fitness", "mean_fitness", "std_fitness", "n_neurons_best", "n_connections_best",
                          "n_species"}
    assert metrics[-1]["best_fitness"] > metrics[0]["best_fitness"]
    assert metrics[0]["n_neurons_best"] == 1 and max(m["n_neurons_best"] for m in metrics) > 1  # grows
    assert 0.25 < final["test_accuracy"] <= 1 and final["n_neurons"] >= 1
    art = rd.path / "artifacts"
    for f in ("fitness_curve.png", "adjacency.png", "neuron_pca.png", "best_genome.npz"):
        assert (art / f).stat().st_size > 1000 or f.endswith(".npz")
    saved = np.load(art / "best_genome.npz")
    assert saved["W"].shape == (final["n_neurons"],) * 2 and saved["W_in"].shape == (final["n_neurons"], 16)
    assert np.count_nonzero(saved["W"]) + np.count_nonzero(saved["W_in"]) == final["n_connections"]


class _Killed(Exception):
    pass


class _DyingContext(RunContext):
    """Dies when asked to log step ``die_at`` (the checkpoint of the step before is on disk)."""

    die_at = None

    def log(self, step, **metrics):
        if step == self.die_at:
            raise _Killed
        super().log(step, **metrics)


def _ctx(path, seed, die_at=None):
    rd = RunDir(path)
    rd.path.mkdir(parents=True, exist_ok=True)
    ctx = _DyingContext(seed, rd, JournalWriter(rd.journal))
    ctx.die_at = die_at
    return ctx


def test_same_seed_same_result_and_resume_equals_uninterrupted(tmp_path):
    params = Params(**{**SMALL, "speciation": True})
    whole = run(params, _ctx(tmp_path / "whole", 3))
    again = run(params, _ctx(tmp_path / "again", 3))
    assert whole == again
    other = run(params, _ctx(tmp_path / "other", 4))
    assert other != whole

    with pytest.raises(_Killed):
        run(params, _ctx(tmp_path / "killed", 3, die_at=3))
    resumed = run(params, _ctx(tmp_path / "killed", 3))
    assert resumed == whole
    a = np.load(tmp_path / "whole" / "artifacts" / "best_genome.npz")
    b = np.load(tmp_path / "killed" / "artifacts" / "best_genome.npz")
    np.testing.assert_array_equal(a["W"], b["W"])
    np.testing.assert_array_equal(a["W_in"], b["W_in"])
    journal = lambda p: [(r["step"], r["metrics"]) for r in read_journal(p / "journal.jsonl")[0]  # noqa: E731
                         if r["event"] == "metrics"]
    assert journal(tmp_path / "killed") == journal(tmp_path / "whole")  # steps 0-2, then 3-5 after resume


def test_random_baseline_and_online_readout_variants(tmp_path):
    final, steps, _ = _execute(tmp_path, {"mode": "random_baseline", "n_train": 216, "n_val": 72, "n_test": 144,
                                          "eval_draws": 2, "candidates": 2}, name="baseline")
    assert len(steps) == 1 and steps[0]["metrics"]["n_neurons_best"] == 50
    assert final["n_neurons"] == 50 and final["test_accuracy"] > 0.6  # a 50-unit reservoir learns the task
    final, steps, _ = _execute(tmp_path, {**SMALL, "generations": 3, "readout": "online", "reward": "stochastic",
                                          "n_train": 288}, name="online")
    assert len(steps) == 3 and 0 <= final["test_accuracy"] <= 1
    assert json.dumps(final)  # plain floats


def test_population_choices_match_reservoirpy_reservoir_and_ridge():
    """The batched path (engine + centred batched ridge, blank steps skipped, padding) makes the same choices
    as reservoirpy's Reservoir.run + Ridge.fit on each genome alone."""
    from reservoirpy.nodes import Reservoir, Ridge

    from workloads.evo_topo.evaluate import choices, reservoir_matrices

    rng = np.random.default_rng(5)
    genomes = [random_genome(n, rng, CellLaw("continuous", 0.4, 0.6)) for n in (4, 9)]
    cfg = EvalConfig(leak=0.3, sr=0.9, dtype="float64")
    data = EvalData.draw(144, 72, [5, 1])
    ours, correct = choices(genomes, data, cfg)
    inputs = np.concatenate([data.train.inputs, data.test.inputs])
    for p, g in enumerate(genomes):
        W, W_in, _ = reservoir_matrices([g], cfg)
        res = Reservoir(W=W[0], Win=W_in[0], lr=cfg.leak)
        last = np.asarray(res.run(inputs))[:, -1]
        ridge = Ridge(ridge=cfg.ridge).fit(last[:144], np.eye(4)[data.train.correct])
        ref = np.asarray(ridge.run(last[144:])).argmax(-1)
        np.testing.assert_array_equal(ours[p], ref)
    assert (ours == correct).mean() > 0.3  # better than chance: the readouts learned something


def test_online_reward_readout_learns_the_task():
    from workloads.esn.reservoir import random_reservoir
    from workloads.evo_topo.genome import join
    from workloads.evo_topo.readout import OnlineRule

    genomes = [join(*random_reservoir(60, 16, 0.5, 1.0, 0.1, 0.5, seed=s)[:2]) for s in range(2)]
    data = EvalData.draw(720, 216, [0, 1])
    for stochastic in (False, True):
        cfg = EvalConfig(leak=0.05, sr=0.5, readout="online", online=OnlineRule(eta=0.02, stochastic=stochastic))
        acc = fitness(genomes, data, cfg)
        assert np.all(acc > 0.4), (stochastic, acc)  # chance is 0.25; learned from rewards alone
