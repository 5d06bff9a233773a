"""NEAT-style speciation for matrix genomes (Stanley & Miikkulainen 2002): to keep several lines of
search alive instead of the early convergence the lab saw.

Neurons align by index (as in the crossover). A connection is a non-zero cell: cells non-zero in both
genomes are *matching*, non-zero in one genome only within the neurons both have are *disjoint*, and
non-zero cells of the larger genome's extra neurons are *excess*. Compatibility distance
delta = c1 E / G + c2 D / G + c3 mean|w_a - w_b| (over matching cells), G = the larger connection count.
Each genome joins the first species whose representative is within the threshold, else founds one; the
threshold moves toward a target species count. Offspring per species are proportional to its mean fitness
(= the sum of shared fitness f / species size); species that have not improved for ``stagnation``
generations get none (except the one holding the best genome).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from workloads.evo_topo.genome import split


def distance(a: np.ndarray, b: np.ndarray, c1: float = 1.0, c2: float = 1.0, c3: float = 0.4) -> float:
    if a.shape[0] < b.shape[0]:
        a, b = b, a
    n = b.shape[0]
    (wa, ia), (wb, ib) = split(a), split(b)
    common_a = np.concatenate([wa[:n, :n].ravel(), ia[:n].ravel()])
    common_b = np.concatenate([wb.ravel(), ib.ravel()])
    nz_a, nz_b = common_a != 0, common_b != 0
    matching = nz_a & nz_b
    disjoint = int(np.count_nonzero(nz_a ^ nz_b))
    excess = int(np.count_nonzero(a)) - int(np.count_nonzero(nz_a))
    g = max(int(np.count_nonzero(a)), int(np.count_nonzero(b)), 1)
    weight = float(np.abs(common_a[matching] - common_b[matching]).mean()) if matching.any() else 0.0
    return c1 * excess / g + c2 * disjoint / g + c3 * weight


@dataclass
class Species:
    id: int
    representative: np.ndarray
    members: list[int] = field(default_factory=list)  # indices into the current population
    best: float = -np.inf
    last_improved: int = 0


@dataclass
class Speciation:
    threshold: float = 0.5
    target: int = 4
    step: float = 0.05
    stagnation: int = 15
    species: list[Species] = field(default_factory=list)
    next_id: int = 0

    def assign(self, population: Sequence[np.ndarray], fitness: np.ndarray, generation: int) -> list[Species]:
        """Put every genome in a species (representatives from the previous generation first), drop empty
        species, update each species' best and representative (its best member), adapt the threshold."""
        for s in self.species:
            s.members = []
        for i, g in enumerate(population):
            for s in self.species:
                if distance(g, s.representative) < self.threshold:
                    s.members.append(i)
                    break
            else:
                self.species.append(Species(self.next_id, np.array(g, copy=True), [i], -np.inf, generation))
                self.next_id += 1
        self.species = [s for s in self.species if s.members]
        for s in self.species:
            best = max(s.members, key=lambda i: fitness[i])
            s.representative = np.array(population[best], copy=True)
            if fitness[best] > s.best:
                s.best, s.last_improved = float(fitness[best]), generation
        if len(self.species) < self.target:
            self.threshold = max(self.step, self.threshold - self.step)
        elif len(self.species) > self.target:
            self.threshold += self.step
        return self.species

    def offspring_counts(self, fitness: np.ndarray, total: int, generation: int) -> list[int]:
        """How many of the next generation's ``total`` genomes each species breeds: proportional to its mean
        fitness (fitness sharing), stagnant species excluded; largest remainders fill the rounding gap."""
        best_species = max(range(len(self.species)), key=lambda k: self.species[k].best)
        share = np.array(
            [
                np.mean(fitness[s.members])
                if (generation - s.last_improved < self.stagnation or k == best_species)
                else 0.0
                for k, s in enumerate(self.species)
            ]
        )
        share = np.maximum(share, 0.0)
        if share.sum() <= 0:
            share = np.ones(len(self.species))
        raw = share / share.sum() * total
        counts = np.floor(raw).astype(int)
        for k in np.argsort(-(raw - counts), kind="stable")[: total - counts.sum()]:
            counts[k] += 1
        return counts.tolist()
