"""Genomes and their variation operators.

A genome is one array G of shape (N, N + K): G[:, :N] is the recurrent matrix W (row i = the weights into
neuron i) and G[:, N:] the K evolved input columns: the 16 of W_in when the input is evolved, plus one bias
column when the bias is a gene (a bias is the weight of an input that is always 1; nets.py decodes the
layout). K can be 0 (W_in frozen, bias not a gene). One array keeps DEAP simple (an individual is an ndarray, the
HallOfFame compares with ``np.array_equal``) and lets structural mutations add or drop a neuron as one row
plus one column. Values are ternary {-1, 0, 1} or continuous in [-1, 1]; each cell is non-zero with the
``density`` probability (``input_density`` for W_in). Every operator returns new arrays (copies, never
views: DEAP's slice-swapping crossovers silently corrupt numpy individuals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workloads.evo_topo.task import INPUT_DIM


@dataclass(frozen=True)
class CellLaw:
    """How a cell is drawn: non-zero with probability ``density`` (``input_density`` in W_in), then
    +-1 (ternary) or uniform in [-1, 1] (continuous)."""

    values: str = "ternary"
    density: float = 0.3
    input_density: float = 0.5

    def draw(self, rng: np.random.Generator, shape, density: float) -> np.ndarray:
        nonzero = rng.random(shape) < density
        if self.values == "ternary":
            vals = rng.choice(np.array([-1.0, 1.0]), size=shape)
        else:
            vals = rng.uniform(-1.0, 1.0, size=shape)
        return np.where(nonzero, vals, 0.0)

    def draw_cells(self, rng: np.random.Generator, n: int, cols: np.ndarray) -> np.ndarray:
        """One fresh value per cell, each with the density of its part (W if col < n, else W_in)."""
        density = np.where(cols < n, self.density, self.input_density)
        return self.draw(rng, cols.shape, 1.0) * (rng.random(cols.shape) < density)


def n_neurons(g: np.ndarray) -> int:
    return int(g.shape[0])


def split(g: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(W, W_in) views of a genome."""
    n = g.shape[0]
    return g[:, :n], g[:, n:]


def join(W: np.ndarray, W_in: np.ndarray) -> np.ndarray:
    return np.concatenate([W, W_in], axis=1)


def n_connections(g: np.ndarray) -> int:
    """Non-zero weights, recurrent and input."""
    return int(np.count_nonzero(g))


def n_inputs(g: np.ndarray) -> int:
    """K, the genome's evolved input columns."""
    return int(g.shape[1] - g.shape[0])


def random_genome(n: int, rng: np.random.Generator, law: CellLaw, k: int = INPUT_DIM) -> np.ndarray:
    """``n`` neurons, ``k`` evolved input columns."""
    return join(law.draw(rng, (n, n), law.density), law.draw(rng, (n, k), law.input_density))


def crossover(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform crossover on a random 50% mask of cells. Neurons align by index: on the neurons both
    parents have, each child takes a random half of its cells from the other parent; a larger parent's extra
    neurons stay with its own child (so a child keeps its parent's size)."""
    c1, c2 = np.array(a, copy=True), np.array(b, copy=True)
    n = min(a.shape[0], b.shape[0])
    na, nb = a.shape[0], b.shape[0]
    # The common part: W[:n, :n] and W_in[:n, :]. Column indices into each genome differ for W_in.
    mask_w = rng.random((n, n)) < 0.5
    mask_in = rng.random((n, n_inputs(a))) < 0.5
    wa, wb = np.array(a[:n, :n]), np.array(b[:n, :n])
    ia, ib = np.array(a[:n, na:]), np.array(b[:n, nb:])
    c1[:n, :n], c2[:n, :n] = np.where(mask_w, wb, wa), np.where(mask_w, wa, wb)
    c1[:n, na:], c2[:n, nb:] = np.where(mask_in, ib, ia), np.where(mask_in, ia, ib)
    return c1, c2


def mutate_cells(g: np.ndarray, rng: np.random.Generator, fraction: float, law: CellLaw) -> np.ndarray:
    """Redraw ``fraction`` of the cells (at least one) from the cell law: the expected sparsity stays the
    density, whatever the cells held before."""
    out = np.array(g, copy=True)
    n = out.shape[0]
    size = out.size
    k = max(1, round(fraction * size))
    flat = rng.choice(size, size=k, replace=False)
    rows, cols = np.divmod(flat, out.shape[1])
    out[rows, cols] = law.draw_cells(rng, n, cols)
    return out


def add_neuron(g: np.ndarray, rng: np.random.Generator, law: CellLaw) -> np.ndarray:
    """A new neuron (last index) with random incoming, outgoing and input weights drawn from the law."""
    W, W_in = split(g)
    n = W.shape[0]
    W2 = np.zeros((n + 1, n + 1))
    W2[:n, :n] = W
    W2[n, :] = law.draw(rng, n + 1, law.density)  # into the new neuron (and its self-connection)
    W2[:n, n] = law.draw(rng, n, law.density)  # out of the new neuron
    W_in2 = np.concatenate([W_in, law.draw(rng, (1, W_in.shape[1]), law.input_density)], axis=0)
    return join(W2, W_in2)


def remove_neuron(g: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Drop a random neuron (its row and column); a 1-neuron genome is returned unchanged (a copy)."""
    n = g.shape[0]
    if n <= 1:
        return np.array(g, copy=True)
    i = int(rng.integers(n))
    W, W_in = split(g)
    keep = np.arange(n) != i
    return join(W[keep][:, keep], W_in[keep])
