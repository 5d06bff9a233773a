"""One evo_topo run: build the search (or the random baseline) from Params, log every generation, checkpoint
every generation, re-score the winner on fresh trials, write the artifacts."""

from __future__ import annotations

import numpy as np

from workloads.esn.reservoir import random_reservoir
from workloads.evo_topo import plots
from workloads.evo_topo.evaluate import EvalConfig, EvalData, PopulationEvaluator, fitness, reservoir_matrices
from workloads.evo_topo.ga import GA, GAConfig
from workloads.evo_topo.genome import CellLaw, join, n_connections
from workloads.evo_topo.readout import OnlineRule
from workloads.evo_topo.task import INPUT_DIM

# Sub-streams of the run seed (np.random.SeedSequence entropy lists): independent, and stable however
# many numbers any other stream consumed.
FITNESS_TRIALS, TEST_TRIALS, BASELINE = 1, 2, 3


def eval_config(p) -> EvalConfig:
    rule = OnlineRule(p.eta, p.beta, 0.0, p.epsilon_decay, p.output_connectivity, p.reward == "stochastic")
    return EvalConfig(p.leak, p.input_scaling, p.sr, p.sr_rescale, p.readout, p.ridge, rule, p.dtype)


def ga_config(p) -> GAConfig:
    return GAConfig(p.population, p.n_init, p.max_neurons, CellLaw(p.values, p.density, p.input_density),
                    p.cxpb, p.mutpb, p.mutation_fraction, p.p_add_neuron, p.p_remove_neuron, p.tournament,
                    p.n_elite, p.hof_size, p.speciation, p.species_target, p.species_threshold, p.stagnation)


def test_score(genome: np.ndarray, p, cfg: EvalConfig, seed: int) -> np.ndarray:
    """Accuracy of ``genome`` on ``eval_draws`` fresh draws (a fresh readout training set and fresh test
    trials each): no single lucky draw decides."""
    return np.array([fitness([genome], EvalData.draw(p.n_train, p.n_test, [seed, TEST_TRIALS, d]), cfg)[0]
                     for d in range(p.eval_draws)])


def evolve(p, ctx, evaluate) -> tuple[np.ndarray, list[dict]]:
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
    return ga.best[0], history


def random_baseline(p, ctx, evaluate) -> tuple[np.ndarray, list[dict]]:
    """``candidates`` random reservoirs (reservoirpy initialisers, W at spectral radius sr, W_in +-1 before
    input_scaling), the best on validation kept; logged as generation 0 so the curves line up."""
    genomes = []
    for k in range(p.candidates):
        W, W_in, _ = random_reservoir(p.units, INPUT_DIM, p.sr, 1.0, p.rc_connectivity, p.input_connectivity,
                                      seed=np.random.default_rng([ctx.seed, BASELINE, k]))
        genomes.append(join(W, W_in))
    fit = evaluate(genomes)
    best = int(np.argmax(fit))
    metrics = {"best_fitness": float(fit[best]), "mean_fitness": float(fit.mean()),
               "std_fitness": float(fit.std()), "n_neurons_best": float(p.units),
               "n_connections_best": float(n_connections(genomes[best])), "n_species": 1.0}
    ctx.log(0, **metrics)
    return genomes[best], [metrics]


def run_experiment(p, ctx) -> dict[str, float]:
    cfg = eval_config(p)
    data = EvalData.draw(p.n_train, p.n_val, [ctx.seed, FITNESS_TRIALS])
    evaluate = PopulationEvaluator(data, cfg, workers=p.workers or ctx.cpus)
    try:
        best, history = (evolve if p.mode == "evolve" else random_baseline)(p, ctx, evaluate)
    finally:
        evaluate.close()
    scores = test_score(best, p, cfg, ctx.seed)
    final = {"test_accuracy": float(scores.mean()), "test_accuracy_std": float(scores.std()),
             "n_neurons": float(best.shape[0]), "n_connections": float(n_connections(best)),
             "best_fitness": float(history[-1]["best_fitness"] if p.mode != "evolve"
                                   else max(h["best_fitness"] for h in history))}
    out = ctx.artifact_dir
    title = f"{p.mode}, seed {ctx.seed}: test {final['test_accuracy']:.3f}"
    plots.fitness_curve(history, out / "fitness_curve.png", title)
    plots.adjacency(best, out / "adjacency.png", f"best genome ({best.shape[0]} neurons), seed {ctx.seed}")
    plots.neuron_pca(best, out / "neuron_pca.png", f"neurons by connection vector, seed {ctx.seed}")
    W_run, W_in_run, _ = reservoir_matrices([best], cfg)
    plots.save_genome(best, out / "best_genome.npz", W_run=W_run[0], W_in_run=W_in_run[0],
                      test_scores=scores, leak=p.leak)
    return final
