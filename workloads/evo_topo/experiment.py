"""One evo_topo run: build the search (or the random reservoirs) from Params, log and checkpoint every
generation, choose the winner on fresh draws, score it on fresh test draws, write the artifacts.

Three kinds of draws, never shared: fitness draws (per generation with ``val_redraw``), selection draws (the
hall of fame re-scored once, to pick the winner) and test draws (the reported score, seen by nothing else).
"""

from __future__ import annotations

import numpy as np

from workloads.evo_topo import plots
from workloads.evo_topo.evaluate import EvalData, PopulationEvaluator, mean_scores
from workloads.evo_topo.ga import GA, GAConfig
from workloads.evo_topo.genome import CellLaw
from workloads.evo_topo.nets import Layout, Net, SeedDraws, decode, random_net
from workloads.evo_topo.protocol import Dynamics
from workloads.evo_topo.readout import OnlineRule

# Sub-streams of the run seed (np.random.SeedSequence entropy lists): independent, and stable however
# many numbers any other stream consumed.
FITNESS_TRIALS, TEST_TRIALS, BASELINE, SEED_DRAWS, SELECTION_TRIALS = 1, 2, 3, 4, 5


def layout(p) -> Layout:
    return Layout(p.evolve_input, p.bias, p.bias_scaling, p.sr_rescale, p.sr, p.input_scaling)


def width(p) -> int:
    """The largest net a run can hold: per-neuron draws are made this wide."""
    return max(p.max_neurons, p.units)


def dynamics(p) -> Dynamics:
    rule = OnlineRule(p.eta, p.beta, p.r_th, p.epsilon_decay, p.output_connectivity, p.reward == "stochastic")
    return Dynamics(p.leak, p.carry_state, p.noise_rc, p.fb_scaling > 0, p.readout, p.ridge, rule, width(p), p.dtype)


def seed_draws(p, seed: int) -> SeedDraws:
    return SeedDraws.draw(
        width(p), p.input_density, p.bias_scaling, p.fb_scaling, p.fb_connectivity, [seed, SEED_DRAWS]
    )


def ga_config(p) -> GAConfig:
    return GAConfig(
        p.population,
        p.n_init,
        p.max_neurons,
        layout(p).k,
        CellLaw(p.values, p.density, p.input_density),
        p.cxpb,
        p.mutpb,
        p.mutation_fraction,
        p.p_add_neuron,
        p.p_remove_neuron,
        p.tournament,
        p.n_elite,
        p.hof_size,
        p.speciation,
        p.species_target,
        p.species_threshold,
        p.stagnation,
        p.val_redraw,
    )


def draws_of(p, stream: int, seed: int, n_test: int, key: int = 0) -> list[EvalData]:
    count = p.eval_draws if stream == TEST_TRIALS else p.val_draws
    return [EvalData.draw(p.n_train, n_test, [seed, stream, key, d]) for d in range(count)]


def penalised(acc: np.ndarray, nets: list[Net], p) -> np.ndarray:
    return acc - p.size_penalty * np.array([net.n for net in nets])


def evolve(p, ctx, evaluator, draws: SeedDraws) -> tuple[Net, np.ndarray, list[dict], float]:
    """The search, then its winner: the hall of fame re-scored on selection draws no generation was scored
    on; also the winner's accuracy on them (its fitness with the winner's curse of 160+ evaluations gone)."""
    lay = layout(p)

    def evaluate(genomes: list[np.ndarray], generation: int) -> np.ndarray:
        nets = [decode(g, lay, draws) for g in genomes]
        key = generation if p.val_redraw else 0
        return penalised(evaluator(nets, draws_of(p, FITNESS_TRIALS, ctx.seed, p.n_val, key)), nets, p)

    ga = GA(ga_config(p), evaluate, ctx.seed)
    saved = ctx.load_checkpoint()
    history: list[dict] = []
    if saved is not None:
        ga.restore(saved["ga"])
        history = saved["history"]
    while ga.generation + 1 < p.generations:
        metrics = ga.step()
        history.append(metrics)
        ctx.log(ga.generation, **metrics)
        ctx.save_checkpoint({"ga": ga.state(), "history": history})
    genomes = [np.array(g, copy=True) for g in ga.hof]
    nets = [decode(g, lay, draws) for g in genomes]
    accuracy = evaluator(nets, draws_of(p, SELECTION_TRIALS, ctx.seed, p.n_val))
    best = int(np.argmax(penalised(accuracy, nets, p)))
    return nets[best], genomes[best], history, float(accuracy[best])


def random_candidates(p, ctx, evaluator, units: int) -> tuple[Net, list[dict]]:
    """``candidates`` random reservoirs of ``units`` neurons, the best on the fitness draws kept, and the
    metrics of that choice, logged as generation 0 so that the curves line up: with one candidate (no
    choice), ``best_fitness`` is the reservoir's own unbiased validation score."""
    nets = [
        random_net(
            units,
            p.sr,
            p.input_scaling,
            p.rc_connectivity,
            p.input_connectivity,
            p.bias_scaling,
            seed=np.random.default_rng([ctx.seed, BASELINE, units, k]),
        )
        for k in range(p.candidates)
    ]
    fit = evaluator(nets, draws_of(p, FITNESS_TRIALS, ctx.seed, p.n_val))
    best = int(np.argmax(fit))
    return nets[best], [
        {
            "best_fitness": float(fit[best]),
            "mean_fitness": float(fit.mean()),
            "std_fitness": float(fit.std()),
            "n_neurons_best": float(units),
            "n_connections_best": float(n_connections(nets[best])),
            "n_species": 1.0,
        }
    ]


def n_connections(net: Net) -> int:
    """Non-zero recurrent and input weights (the bias not counted)."""
    return int(np.count_nonzero(net.W) + np.count_nonzero(net.W_in))


def run_experiment(p, ctx) -> dict[str, float]:
    draws = seed_draws(p, ctx.seed)
    evaluator = PopulationEvaluator(dynamics(p), draws, workers=p.workers or ctx.cpus)
    genome = None
    try:
        if p.mode == "evolve":
            net, genome, history, winner_fitness = evolve(p, ctx, evaluator, draws)
        else:  # random_matched: the size the search starts from and is built around, read from the config
            net, history = random_candidates(p, ctx, evaluator, p.units if p.mode == "random_baseline" else p.n_init)
            ctx.log(0, **history[0])
            winner_fitness = history[0]["best_fitness"]
    finally:
        evaluator.close()
    test = mean_scores([net], draws_of(p, TEST_TRIALS, ctx.seed, p.n_test), dynamics(p), draws)
    final = {
        "test_accuracy": float(test["accuracy"][0]),
        "test_accuracy_std": float(test["accuracy_std"][0]),
        "test_best_first_accuracy": float(test["best_first_accuracy"][0]),
        "test_best_last_accuracy": float(test["best_last_accuracy"][0]),
        "test_legal_rate": float(test["legal_rate"][0]),
        "n_neurons": float(net.n),
        "n_connections": float(n_connections(net)),
        "best_fitness": float(max(h["best_fitness"] for h in history)),
        "winner_fitness": winner_fitness,
    }
    out = ctx.artifact_dir
    title = f"{p.mode}, seed {ctx.seed}: test {final['test_accuracy']:.3f}"
    plots.fitness_curve(history, out / "fitness_curve.png", title)
    plots.adjacency(net, out / "adjacency.png", f"{p.mode} winner ({net.n} neurons), seed {ctx.seed}")
    plots.neuron_pca(net, out / "neuron_pca.png", f"neurons by connection vector, seed {ctx.seed}")
    extra = {"genome": genome} if genome is not None else {}
    plots.save_net(net, out / "best_net.npz", test_accuracy=test["accuracy"], leak=p.leak, **extra)
    return final
