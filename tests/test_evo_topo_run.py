"""evo_topo end to end: population evaluation, a short search that improves, determinism, resume after a
kill, the random baseline, speciation and the online readout; through the real worker."""

import json

import numpy as np
import pytest

from orchestrator.job import worker
from orchestrator.job.context import RunContext
from orchestrator.job.journal import JournalWriter, read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.spec.plan import Run
from workloads.evo_topo import Params, run
from workloads.evo_topo.evaluate import EvalData, PopulationEvaluator, mean_scores
from workloads.evo_topo.experiment import dynamics, ga_config, layout, seed_draws
from workloads.evo_topo.ga import GAConfig
from workloads.evo_topo.genome import CellLaw, random_genome
from workloads.evo_topo.nets import decode, random_net

# The protocol (online readout, carried state, feedback, noise, bias gene) on small trial counts.
SMALL = dict(
    population=8,
    generations=5,
    max_neurons=6,
    p_add_neuron=0.5,
    n_train=144,
    n_val=72,
    n_test=72,
    val_draws=1,
    eval_draws=2,
)


def _execute(tmp_path, params, seed=0, name="r"):
    rd = RunDir(tmp_path / name)
    rd.create(
        {"run": Run("evo_topo", params, seed, "v").to_dict(), "run_id": "x", "experiment_id": "0", "cpus": 1, "gpus": 0}
    )
    status = worker.execute(rd.path)
    records, _ = read_journal(rd.journal)
    end = [r for r in records if r["event"] == "end"][-1]
    assert status == "FINISHED", end
    steps = [r for r in records if r["event"] == "metrics"]
    return end["final"], steps, rd


def test_padded_population_equals_one_by_one_and_parallel_split():
    p = Params(**SMALL, dtype="float64")
    draws = seed_draws(p, 0)
    rng = np.random.default_rng(0)
    genomes = [random_genome(int(n), rng, CellLaw("continuous"), layout(p).k) for n in (1, 4, 6, 2, 5, 3)]
    nets = [decode(g, layout(p), draws) for g in genomes]
    datas = [EvalData.draw(144, 72, [0, 1])]
    together = mean_scores(nets, datas, dynamics(p), draws)["accuracy"]
    alone = np.array([mean_scores([net], datas, dynamics(p), draws)["accuracy"][0] for net in nets])
    np.testing.assert_allclose(together, alone, atol=1.5 / 72)  # at most one choice in 72 flips by rounding
    assert len(set(together)) > 2  # distinct genomes, distinct scores: the check can fail
    evaluator = PopulationEvaluator(dynamics(p), draws, workers=2)
    try:
        np.testing.assert_array_equal(evaluator(nets, datas), together)
    finally:
        evaluator.close()


def test_ga_config_takes_every_value_from_params():
    with pytest.raises(TypeError):
        GAConfig()  # no defaults of its own: Params is the one source
    p = Params()
    cfg = ga_config(p)
    assert (cfg.population, cfg.max_neurons, cfg.n_elite, cfg.redraw) == (
        p.population,
        p.max_neurons,
        p.n_elite,
        p.val_redraw,
    )
    assert cfg.n_inputs == 17  # W_in (16) + the bias gene
    assert ga_config(Params(evolve_input=False, bias="fixed")).n_inputs == 0


def test_feedback_needs_the_online_readout():
    with pytest.raises(ValueError, match="feedback"):
        Params(readout="ridge")
    assert Params(readout="ridge", fb_scaling=0).readout == "ridge"


def test_short_search_improves_and_writes_artifacts(tmp_path):
    final, steps, rd = _execute(tmp_path, {**SMALL, "val_redraw": False})  # one draw: best fitness can only rise
    assert [s["step"] for s in steps] == list(range(5))
    metrics = [s["metrics"] for s in steps]
    for m in metrics:
        assert set(m) == {
            "best_fitness",
            "mean_fitness",
            "std_fitness",
            "n_neurons_best",
            "n_connections_best",
            "n_species",
        }
    assert metrics[-1]["best_fitness"] > metrics[0]["best_fitness"]
    assert metrics[0]["n_neurons_best"] == 1 and max(m["n_neurons_best"] for m in metrics) > 1  # grows
    assert 0.2 < final["test_accuracy"] <= 1 and final["n_neurons"] >= 1
    assert set(final) >= {"test_best_first_accuracy", "test_best_last_accuracy", "test_legal_rate"}
    assert 0 <= final["test_legal_rate"] <= 1
    art = rd.path / "artifacts"
    for f in ("fitness_curve.png", "adjacency.png", "neuron_pca.png"):
        assert (art / f).stat().st_size > 1000
    saved = np.load(art / "best_net.npz")
    n = int(final["n_neurons"])
    assert saved["W"].shape == (n, n) and saved["W_in"].shape == (n, 16) and saved["bias"].shape == (n,)
    assert saved["genome"].shape == (n, n + 17)  # W | W_in | bias gene
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
    a = np.load(tmp_path / "whole" / "artifacts" / "best_net.npz")
    b = np.load(tmp_path / "killed" / "artifacts" / "best_net.npz")
    for key in ("W", "W_in", "bias", "genome"):
        np.testing.assert_array_equal(a[key], b[key])

    def journal(p):
        return [(r["step"], r["metrics"]) for r in read_journal(p / "journal.jsonl")[0] if r["event"] == "metrics"]

    assert journal(tmp_path / "killed") == journal(tmp_path / "whole")  # steps 0-2, then 3-4 after resume


def test_random_baseline_matched_baseline_and_options(tmp_path):
    small = dict(n_train=144, n_val=72, n_test=72, eval_draws=1)
    final, steps, _ = _execute(tmp_path, {"mode": "random_baseline", **small, "candidates": 2}, name="baseline")
    assert len(steps) == 1 and steps[0]["metrics"]["n_neurons_best"] == 50 and final["n_neurons"] == 50
    assert final["winner_fitness"] == final["best_fitness"] == steps[0]["metrics"]["best_fitness"]
    # random_matched runs no search: one step, its own validation score, the size the config gives n_init
    matched, steps, _ = _execute(
        tmp_path, {**SMALL, "generations": 30, "n_init": 4, "mode": "random_matched"}, name="matched"
    )
    assert len(steps) == 1 and matched["n_neurons"] == 4 == steps[0]["metrics"]["n_neurons_best"]
    assert matched["best_fitness"] == matched["winner_fitness"] == steps[0]["metrics"]["best_fitness"]
    for option in (
        {"evolve_input": False, "bias": "fixed"},
        {"values": "continuous", "sr_rescale": False},
        {"size_penalty": 0.01, "reward": "stochastic"},
        {"readout": "ridge", "fb_scaling": 0.0},
        {"carry_state": False, "noise_rc": 0.0, "fb_scaling": 0.0, "bias": "none"},
    ):
        final, steps, _ = _execute(tmp_path, {**SMALL, "generations": 2, **option}, name=str(sorted(option)))
        assert len(steps) == 2 and 0 <= final["test_accuracy"] <= 1, option
    assert json.dumps(final)  # plain floats
    for units in (1, 2, 3):  # sizes a search can end at: reservoirpy's sparse eigen-solver fails below 3
        net = random_net(units, 0.5, 1.0, 1.0, 0.5, 1.0, seed=units)
        assert net.n == units and np.abs(np.linalg.eigvals(net.W)).max() == pytest.approx(0.5)


def test_population_choices_match_reservoirpy_reservoir_and_ridge():
    """The supervised readout's batched path (engine + centred batched ridge, padding, bias) makes the same
    choices as reservoirpy's Reservoir.run + Ridge.fit on each reservoir alone (trials from the zero state)."""
    from reservoirpy.nodes import Reservoir, Ridge

    from workloads.evo_topo.nets import pad
    from workloads.evo_topo.protocol import heldout_choices

    p = Params(readout="ridge", fb_scaling=0.0, carry_state=False, noise_rc=0.0, dtype="float64", leak=0.3)
    draws = seed_draws(p, 5)
    nets = [random_net(n, 0.9, 1.0, 0.4, 0.6, 1.0, seed=n) for n in (4, 9)]
    data = EvalData.draw(144, 72, [5, 1])
    ours = heldout_choices(pad(nets, draws), data.train, data.test, dynamics(p), data.seed)
    inputs = np.concatenate([data.train.inputs, data.test.inputs])
    for k, net in enumerate(nets):
        assert np.any(net.bias != 0)
        res = Reservoir(W=net.W, Win=net.W_in, bias=net.bias, lr=p.leak)
        last = np.asarray(res.run(inputs))[:, -1]
        ridge = Ridge(ridge=p.ridge).fit(last[:144], np.eye(4)[data.train.correct])
        ref = np.asarray(ridge.run(last[144:])).argmax(-1)
        np.testing.assert_array_equal(ours[k], ref)
    assert (ours == data.test.correct).mean() > 0.3  # better than chance: the readouts learned something


def test_online_reward_readout_learns_the_task():
    p = Params(units=60)
    draws = seed_draws(p, 0)
    nets = [random_net(60, p.sr, 1.0, p.rc_connectivity, p.input_connectivity, 1.0, seed=s) for s in range(2)]
    datas = [EvalData.draw(1000, 216, [0, 1])]
    for stochastic in (False, True):
        dyn = dynamics(Params(units=60, reward="stochastic" if stochastic else "deterministic"))
        acc = mean_scores(nets, datas, dyn, draws)["accuracy"]
        assert np.all(acc > 0.35), (stochastic, acc)  # chance is 0.25; learned from rewards alone


def test_the_winner_fitness_is_its_score_on_fresh_selection_draws_and_the_pca_view_is_logged(tmp_path):
    """The winner's logged fitness is not the search's maximum (the winner's curse of every evaluation) but
    its accuracy re-scored on selection draws no generation saw; the lab's PCA view is an artifact."""
    from workloads.evo_topo.experiment import FITNESS_TRIALS, SELECTION_TRIALS, draws_of
    from workloads.evo_topo.nets import Net

    params = {**SMALL, "generations": 4, "val_draws": 2}
    final, steps, rd = _execute(tmp_path, params, seed=2)
    p = Params(**params)
    saved = np.load(rd.artifacts / "best_net.npz")
    winner = Net(saved["W"], saved["W_in"], saved["bias"])
    selection = draws_of(p, SELECTION_TRIALS, 2, p.n_val)
    rescored = mean_scores([winner], selection, dynamics(p), seed_draws(p, 2))["accuracy"][0]
    assert final["winner_fitness"] == pytest.approx(rescored, abs=1e-12)
    assert final["best_fitness"] == max(s["metrics"]["best_fitness"] for s in steps)
    fitness_seen = {d.seed for g in range(4) for d in draws_of(p, FITNESS_TRIALS, 2, p.n_val, key=g)}
    assert fitness_seen.isdisjoint({d.seed for d in selection})  # fresh: no generation was scored on them
    pca = rd.artifacts / "neuron_pca.png"
    assert pca.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pca.stat().st_size > 5000
