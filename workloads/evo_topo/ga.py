"""The genetic search: DEAP toolbox (tournament selection, varAnd, HallOfFame) over matrix genomes, with
structural mutations that let a reservoir grow from one neuron and optional NEAT-style speciation.

One generation = select -> vary (crossover, cell mutation, add/remove neuron) -> evaluate the changed
genomes as one population batch -> keep elites. With ``redraw`` every generation is scored on fresh trials
(``evaluate(genomes, generation)`` decides which): then every individual, elites included, is evaluated again,
so that a generation is compared on one draw and no genome keeps a lucky score from an earlier one.
``GA.state()``/``GA.restore()`` hold everything the rest of the search depends on (population with fitness,
hall of fame, species, both RNG states), so a search resumed from a checkpoint continues exactly as an
uninterrupted one.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from deap import algorithms, base, creator, tools

from workloads.evo_topo import genome as gn
from workloads.evo_topo.speciation import Speciation

# creator classes at module level, so that individuals pickle (for worker processes); guarded against re-import.
if not hasattr(creator, "EvoTopoFitness"):
    creator.create("EvoTopoFitness", base.Fitness, weights=(1.0,))
if not hasattr(creator, "EvoTopoIndividual"):
    creator.create("EvoTopoIndividual", np.ndarray, fitness=creator.EvoTopoFitness)
if TYPE_CHECKING:

    class Individual(np.ndarray):  # what DEAP's creator makes: a genome matrix with a fitness
        fitness: base.Fitness
else:
    Individual = creator.EvoTopoIndividual


@dataclass(frozen=True)
class GAConfig:
    """The search's settings. No defaults here: Params (workloads/evo_topo/__init__.py) is their one source,
    `experiment.ga_config` builds this from it."""

    population: int
    n_init: int
    max_neurons: int
    n_inputs: int  # evolved input columns of a genome (nets.Layout.k)
    law: gn.CellLaw
    cxpb: float
    mutpb: float
    mutation_fraction: float
    p_add_neuron: float
    p_remove_neuron: float
    tournament: int
    n_elite: int
    hof_size: int
    speciation: bool
    species_target: int
    species_threshold: float
    stagnation: int
    redraw: bool


def _compact(a: np.ndarray) -> np.ndarray:
    """A copy for the checkpoint: int8 when that is exact (ternary genomes, 8x smaller), else as is."""
    small = a.astype(np.int8)
    return small if np.array_equal(small, a) else np.array(a, copy=True)


def individual(a: np.ndarray, fit: tuple[float, ...] | None = None) -> Individual:
    ind = Individual(np.array(a, dtype=np.float64, copy=True))
    if fit:
        ind.fitness.values = fit
    return ind


class GA:
    """A running search; ``evaluate(genomes, generation)`` maps a list of genomes (plain arrays) to their
    fitness (P,) for that generation."""

    def __init__(self, cfg: GAConfig, evaluate: Callable[[list[np.ndarray], int], np.ndarray], seed: int):
        self.cfg, self.evaluate = cfg, evaluate
        self.rng = np.random.default_rng([seed, 7])  # the GA's own numpy stream (operators)
        random.seed(seed)  # DEAP's selection draws from Python's random
        self.generation = -1
        self.population: list[Individual] = []
        self.hof = tools.HallOfFame(cfg.hof_size, similar=np.array_equal)
        self.speciation = (
            Speciation(cfg.species_threshold, cfg.species_target, stagnation=cfg.stagnation) if cfg.speciation else None
        )
        self.n_species = 1
        tb = base.Toolbox()
        tb.register("mate", self._mate)
        tb.register("mutate", self._mutate)
        tb.register("select", tools.selTournament, tournsize=cfg.tournament)
        self.toolbox = tb

    # --- operators, DEAP style: take individuals, return new ones (fitness invalidated by varAnd) ---
    def _mate(self, a: Individual, b: Individual) -> tuple[Individual, Individual]:
        c1, c2 = gn.crossover(np.asarray(a), np.asarray(b), self.rng)
        return individual(c1), individual(c2)

    def _mutate(self, a: Individual) -> tuple[Individual]:
        return (individual(gn.mutate_cells(np.asarray(a), self.rng, self.cfg.mutation_fraction, self.cfg.law)),)

    def _structural(self, offspring: list[Individual]) -> list[Individual]:
        out = []
        for ind in offspring:
            g = np.asarray(ind)
            changed = False
            if self.rng.random() < self.cfg.p_add_neuron and g.shape[0] < self.cfg.max_neurons:
                g, changed = gn.add_neuron(g, self.rng, self.cfg.law), True
            if self.rng.random() < self.cfg.p_remove_neuron and g.shape[0] > 1:
                g, changed = gn.remove_neuron(g, self.rng), True
            out.append(individual(g) if changed else ind)
        return out

    def _vary(self, parents: list[Individual]) -> list[Individual]:
        offspring = algorithms.varAnd(parents, self.toolbox, self.cfg.cxpb, self.cfg.mutpb)
        return self._structural(offspring)

    # --- the loop ---
    def _evaluate_invalid(self, population: list[Individual], generation: int) -> None:
        if self.cfg.redraw:  # a fresh draw: every score of the previous one is stale
            for ind in population:
                del ind.fitness.values
        invalid = [ind for ind in population if not ind.fitness.valid]
        if invalid:
            for ind, f in zip(invalid, self.evaluate([np.asarray(ind) for ind in invalid], generation), strict=False):
                ind.fitness.values = (float(f),)

    def step(self) -> dict[str, float]:
        """Make (generation 0: draw) and evaluate the next generation; return its metrics."""
        cfg = self.cfg
        if self.generation < 0:
            new = [
                individual(gn.random_genome(cfg.n_init, self.rng, cfg.law, cfg.n_inputs)) for _ in range(cfg.population)
            ]
        elif self.speciation is None:
            elites = [self.toolbox.clone(e) for e in tools.selBest(self.population, cfg.n_elite)]
            parents = self.toolbox.select(self.population, cfg.population - len(elites))
            new = elites + self._vary(parents)
        else:
            new = self._speciated_offspring()
        self._evaluate_invalid(new, self.generation + 1)
        self.population, self.generation = new, self.generation + 1
        self.hof.update(self.population)
        if self.speciation is not None:
            fit = np.array([ind.fitness.values[0] for ind in self.population])
            self.n_species = len(self.speciation.assign(self.population, fit, self.generation))
        return self.metrics()

    def _speciated_offspring(self) -> list[Individual]:
        assert self.speciation is not None, "called only when speciation is on"
        fit = np.array([ind.fitness.values[0] for ind in self.population])
        counts = self.speciation.offspring_counts(fit, self.cfg.population, self.generation)
        new: list[Individual] = []
        for species, count in zip(self.speciation.species, counts, strict=False):
            if count == 0:
                continue
            members = [self.population[i] for i in species.members]
            elites = [self.toolbox.clone(e) for e in tools.selBest(members, 1)] if len(members) > 2 else []
            parents = self.toolbox.select(members, count - len(elites))
            new += elites + self._vary(parents)
        return new

    def metrics(self) -> dict[str, float]:
        fit = np.array([ind.fitness.values[0] for ind in self.population])
        best = self.population[int(np.argmax(fit))]
        return {
            "best_fitness": float(fit.max()),
            "mean_fitness": float(fit.mean()),
            "std_fitness": float(fit.std()),
            "n_neurons_best": float(gn.n_neurons(best)),
            "n_connections_best": float(gn.n_connections(np.asarray(best))),
            "n_species": float(self.n_species),
        }

    @property
    def best(self) -> tuple[np.ndarray, float]:
        """The best genome ever seen (hall of fame) and its fitness."""
        return np.array(self.hof[0], copy=True), float(self.hof[0].fitness.values[0])

    # --- checkpoints: plain arrays and RNG states, nothing that depends on DEAP's pickling ---
    def state(self) -> dict:
        pack = lambda inds: [(_compact(np.asarray(i)), tuple(i.fitness.values)) for i in inds]  # noqa: E731
        return {
            "generation": self.generation,
            "population": pack(self.population),
            "hof": pack(self.hof),
            "speciation": self.speciation,
            "n_species": self.n_species,
            "rng": self.rng.bit_generator.state,
            "random": random.getstate(),
        }

    def restore(self, state: dict) -> None:
        self.generation = state["generation"]
        self.population = [individual(a, f) for a, f in state["population"]]
        # Set the hall of fame's items as saved: re-inserting would reorder genomes of equal fitness.
        self.hof.clear()
        self.hof.items = [individual(a, f) for a, f in state["hof"]]
        self.hof.keys = [ind.fitness for ind in reversed(self.hof.items)]
        self.speciation, self.n_species = state["speciation"], state["n_species"]
        self.rng.bit_generator.state = state["rng"]
        random.setstate(state["random"])
