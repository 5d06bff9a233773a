"""evo_topo's genome operators keep shape, value set and sparsity statistics; speciation distance; the
population evaluator (padding, parallel split) and the readouts."""

import numpy as np
import pytest

from workloads.evo_topo.genome import (
    CellLaw,
    add_neuron,
    crossover,
    mutate_cells,
    n_connections,
    random_genome,
    remove_neuron,
    split,
)
from workloads.evo_topo.speciation import Speciation, distance

TERNARY, CONTINUOUS = CellLaw("ternary", 0.3, 0.5), CellLaw("continuous", 0.3, 0.5)


def _value_set_ok(g, law):
    if law.values == "ternary":
        return set(np.unique(g)) <= {-1.0, 0.0, 1.0}
    return np.all(np.abs(g) <= 1.0)


@pytest.mark.parametrize("law", [TERNARY, CONTINUOUS])
def test_random_genome_shape_values_and_density(law):
    g = random_genome(80, np.random.default_rng(0), law)
    W, W_in = split(g)
    assert g.shape == (80, 96) and W.shape == (80, 80) and W_in.shape == (80, 16)
    assert _value_set_ok(g, law)
    assert abs(np.mean(W != 0) - 0.3) < 0.02 and abs(np.mean(W_in != 0) - 0.5) < 0.04


@pytest.mark.parametrize("law", [TERNARY, CONTINUOUS])
def test_crossover_mixes_half_the_cells_and_copies(law):
    rng = np.random.default_rng(1)
    a, b = random_genome(40, rng, law), random_genome(40, rng, law)
    a0, b0 = a.copy(), b.copy()
    c1, c2 = crossover(a, b, rng)
    assert c1.shape == a.shape and c2.shape == b.shape and _value_set_ok(c1, law) and _value_set_ok(c2, law)
    np.testing.assert_array_equal(a, a0)  # parents untouched
    np.testing.assert_array_equal(b, b0)
    assert not np.shares_memory(c1, a) and not np.shares_memory(c2, b)
    differ = a != b
    from_b = (c1 == b) & differ
    assert np.all((c1 == a) | (c1 == b)) and np.all((c2 == a) | (c2 == b))
    assert 0.45 < from_b.sum() / differ.sum() < 0.55  # a random 50% of cells
    np.testing.assert_array_equal(from_b, (c2 == a) & differ)  # complementary children: cells swapped


def test_crossover_of_different_sizes_keeps_each_size_and_extra_neurons():
    rng = np.random.default_rng(2)
    a, b = random_genome(6, rng, TERNARY), random_genome(3, rng, TERNARY)
    c1, c2 = crossover(a, b, rng)
    assert c1.shape == (6, 22) and c2.shape == (3, 19)
    np.testing.assert_array_equal(c1[3:], a[3:])  # a's extra neurons' rows stay
    np.testing.assert_array_equal(c1[:, 3:6], a[:, 3:6])  # ... and their columns
    Wa, Wia = split(a)
    Wb, Wib = split(b)
    W1, Wi1 = split(c1)
    assert np.all((Wi1[:3] == Wia[:3]) | (Wi1[:3] == Wib))  # W_in aligned by input, not by column index
    assert np.all((W1[:3, :3] == Wa[:3, :3]) | (W1[:3, :3] == Wb))


@pytest.mark.parametrize("law", [TERNARY, CONTINUOUS])
def test_mutation_redraws_a_fraction_and_keeps_sparsity(law):
    rng = np.random.default_rng(3)
    g = random_genome(50, rng, law)
    m = mutate_cells(g, rng, 0.05, law)
    assert m.shape == g.shape and _value_set_ok(m, law) and not np.shares_memory(m, g)
    assert 0 < np.count_nonzero(m != g) <= round(0.05 * g.size)
    dense = np.ones((50, 66))  # density 1 everywhere: repeated mutation pulls it to the law's densities
    for _ in range(60):
        dense = mutate_cells(dense, rng, 0.1, law)
    W, W_in = split(dense)
    assert abs(np.mean(W != 0) - 0.3) < 0.05 and abs(np.mean(W_in != 0) - 0.5) < 0.07
    assert _value_set_ok(dense, law)


def test_add_and_remove_neuron():
    rng = np.random.default_rng(4)
    g = random_genome(1, rng, TERNARY)
    grown = g
    for n in range(2, 8):
        grown = add_neuron(grown, rng, TERNARY)
        assert grown.shape == (n, n + 16) and _value_set_ok(grown, TERNARY)
    bigger = add_neuron(grown, rng, TERNARY)
    W, W_in = split(grown)
    W2, W_in2 = split(bigger)
    np.testing.assert_array_equal(W2[:7, :7], W)  # old weights kept, new neuron last
    np.testing.assert_array_equal(W_in2[:7], W_in)
    smaller = remove_neuron(bigger, np.random.default_rng(5))
    assert smaller.shape == (7, 23)
    i = int(np.random.default_rng(5).integers(8))
    keep = np.arange(8) != i
    np.testing.assert_array_equal(split(smaller)[0], W2[keep][:, keep])
    one = remove_neuron(g, rng)
    assert one.shape == g.shape and not np.shares_memory(one, g)
    assert n_connections(g) == np.count_nonzero(g)


def test_speciation_distance_and_assignment():
    rng = np.random.default_rng(6)
    a = random_genome(8, rng, CONTINUOUS)
    assert distance(a, a) == 0
    b = mutate_cells(a, rng, 0.3, CONTINUOUS)
    c = random_genome(12, rng, TERNARY)
    assert 0 < distance(a, b) < distance(a, c)
    assert distance(a, c) == pytest.approx(distance(c, a))
    pop = [a, b, c, add_neuron(c, rng, TERNARY)]
    spec = Speciation(threshold=0.6, target=2)
    species = spec.assign(pop, np.array([0.5, 0.6, 0.4, 0.3]), generation=0)
    where = {i: s.id for s in species for i in s.members}
    assert where[0] == where[1] and where[2] == where[3] and where[0] != where[2]
    counts = spec.offspring_counts(np.array([0.5, 0.6, 0.4, 0.3]), 10, generation=0)
    assert sum(counts) == 10 and counts[0] > counts[1]
