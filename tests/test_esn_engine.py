"""The shared ESN engine against reservoirpy's Reservoir (the reference), and its batching contracts."""

import numpy as np
import pytest
import torch
from reservoirpy.nodes import Reservoir

from workloads.esn.reservoir import esn_states, random_reservoir, rescale_spectral_radius, spectral_radius


def _reference(W, W_in, bias, leak, u):
    """reservoirpy states for each sequence of u (B, T, D), given explicit matrices."""
    res = Reservoir(W=W, Win=W_in, bias=bias, lr=leak, dtype=np.float64)
    return np.asarray(res.run(u))  # a 3-D array: every sequence starts from the zero state


def test_random_reservoir_matches_reservoirpy_initialisation():
    W, W_in, bias = random_reservoir(
        40, 6, sr=0.8, input_scaling=0.4, rc_connectivity=0.1, input_connectivity=0.5, seed=11
    )
    res = Reservoir(40, sr=0.8, input_scaling=0.4, rc_connectivity=0.1, input_connectivity=0.5, seed=11)
    res.initialize(np.zeros((1, 6)))
    dense = lambda m: m.toarray() if hasattr(m, "toarray") else np.asarray(m)  # noqa: E731
    np.testing.assert_array_equal(dense(res.W), W)
    np.testing.assert_array_equal(dense(res.Win), W_in)
    assert np.all(bias == 0)
    assert abs(spectral_radius(W) - 0.8) < 1e-9
    assert 0.05 < np.mean(W != 0) < 0.15  # connectivity 0.1 held


@pytest.mark.parametrize("leak", [1.0, 0.3])
def test_states_match_reservoirpy(leak):
    W, W_in, bias = random_reservoir(
        25, 4, sr=1.1, input_scaling=0.7, rc_connectivity=0.2, input_connectivity=0.8, seed=3, bias_scaling=0.3
    )
    assert np.any(bias != 0)
    u = np.random.default_rng(0).normal(size=(5, 30, 4))
    ref = _reference(W, W_in, bias, leak, u)
    mine = esn_states(W, W_in, u, leak, bias=bias)
    assert mine.dtype == torch.float64 and mine.shape == (5, 30, 25)
    assert np.abs(mine.numpy() - ref).max() < 1e-9


def test_population_broadcast_equals_one_by_one():
    rng = np.random.default_rng(1)
    P, N, D = 4, 12, 3
    Ws = np.stack([random_reservoir(N, D, 0.9, 1.0, 0.3, 1.0, seed=s)[0] for s in range(P)])
    W_ins = rng.uniform(-1, 1, size=(P, N, D))
    u = rng.normal(size=(6, 15, D))
    batched = esn_states(Ws, W_ins, u, 0.5).numpy()
    assert batched.shape == (P, 6, 15, N)
    last = esn_states(Ws, W_ins, u, 0.5, last_only=True).numpy()
    np.testing.assert_array_equal(last, batched[:, :, -1])
    for p in range(P):
        ref = _reference(Ws[p], W_ins[p], np.zeros(N), 0.5, u)
        assert np.abs(batched[p] - ref).max() < 1e-9


def test_reverse_is_forward_on_flipped_inputs_and_x0_is_used():
    W, W_in, _ = random_reservoir(10, 2, 0.9, 1.0, 0.5, 1.0, seed=5)
    u = np.random.default_rng(2).normal(size=(3, 8, 2))
    back = esn_states(W, W_in, u, 0.4, reverse=True).numpy()
    fwd_flipped = esn_states(W, W_in, u[:, ::-1].copy(), 0.4).numpy()[:, ::-1]
    np.testing.assert_allclose(back, fwd_flipped, atol=0, rtol=0)
    assert not np.allclose(back, esn_states(W, W_in, u, 0.4).numpy())
    x0 = np.random.default_rng(3).normal(size=(3, 10))
    res = Reservoir(W=W, Win=W_in, lr=0.4)
    res.initialize(u[0])
    res.state = {"out": x0[1]}
    ref = res.run(u[1])
    assert np.abs(esn_states(W, W_in, u, 0.4, x0=x0)[1].numpy() - ref).max() < 1e-9


def test_padding_neurons_stay_zero_and_do_not_change_the_others():
    W, W_in, bias = random_reservoir(8, 3, 0.9, 1.0, 0.5, 1.0, seed=9, bias_scaling=0.1)
    Wp, W_inp, bp = np.zeros((11, 11)), np.zeros((11, 3)), np.zeros(11)
    Wp[:8, :8], W_inp[:8], bp[:8] = W, W_in, bias
    u = np.random.default_rng(4).normal(size=(2, 10, 3))
    padded = esn_states(Wp, W_inp, u, 0.7, bias=bp).numpy()
    assert np.all(padded[..., 8:] == 0)
    np.testing.assert_allclose(padded[..., :8], esn_states(W, W_in, u, 0.7, bias=bias).numpy(), rtol=0, atol=1e-12)


def test_float32_follows_W_and_torch_inputs_work():
    W, W_in, _ = random_reservoir(6, 2, 0.9, 1.0, 0.5, 1.0, seed=1, dtype=np.float32)
    s = esn_states(torch.from_numpy(W), W_in, torch.ones(1, 4, 2, dtype=torch.float64), 1.0)
    assert s.dtype == torch.float32


def test_rescale_spectral_radius_and_nilpotent_guard():
    W = np.random.default_rng(0).normal(size=(10, 10))
    assert abs(spectral_radius(rescale_spectral_radius(W, 0.5)) - 0.5) < 1e-9
    nil = np.triu(np.ones((5, 5)), k=1)  # strictly upper triangular: radius 0
    out = rescale_spectral_radius(nil, 0.9)
    assert np.all(np.isfinite(out)) and np.array_equal(out, nil) and out is not nil
    t = rescale_spectral_radius(torch.from_numpy(W), 2.0)
    assert isinstance(t, torch.Tensor) and abs(spectral_radius(t) - 2.0) < 1e-9


def test_chunked_input_drive_gives_the_same_states(monkeypatch):
    import workloads.esn.reservoir as engine

    rng = np.random.default_rng(6)
    W, W_in, u = rng.normal(size=(3, 7, 7)) * 0.3, rng.normal(size=(3, 7, 2)), rng.normal(size=(4, 9, 2))
    bias = rng.normal(size=(3, 7))
    whole = esn_states(W, W_in, u, 0.6, bias=bias).numpy()
    monkeypatch.setattr(engine, "_DRIVE_ELEMENTS", 3 * 4 * 7 * 2)  # two steps per matmul: 5 chunks
    chunked = esn_states(W, W_in, u, 0.6, bias=bias).numpy()
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=1e-12)
    ref = _reference(W[1], W_in[1], bias[1], 0.6, u)
    assert np.abs(chunked[1] - ref).max() < 1e-9


def test_many_sequences_time_major_path_matches_reservoirpy():
    """>= 64 sequences take the time-major input-drive path; same states as reservoirpy."""
    rng = np.random.default_rng(8)
    Ws = np.stack([random_reservoir(5, 3, 0.9, 1.0, 0.5, 1.0, seed=s)[0] for s in range(2)])
    W_ins, bias, u = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5)), rng.normal(size=(70, 6, 3))
    states = esn_states(Ws, W_ins, u, 0.4, bias=bias).numpy()
    for p in range(2):
        assert np.abs(states[p] - _reference(Ws[p], W_ins[p], bias[p], 0.4, u)).max() < 1e-9


@pytest.mark.parametrize("threads", [1, 2])
def test_sparse_recurrence_matches_dense_and_reservoirpy(monkeypatch, threads):
    """A reservoir as sparse as reservoirpy's steps on a CSR copy of W (with 2 threads its input drive goes
    through torch's BLAS): same states as the dense path and as reservoirpy, to float64 rounding."""
    import workloads.esn.reservoir as engine

    W, W_in, bias = random_reservoir(
        150, 6, sr=0.9, input_scaling=0.5, rc_connectivity=0.1, input_connectivity=0.5, seed=7, bias_scaling=0.2
    )
    u = np.random.default_rng(4).normal(size=(3, 40, 6))
    assert engine.steps_sparse(torch.from_numpy(W))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        sparse = esn_states(W, W_in, u, 0.3, bias=bias).numpy()
        back = esn_states(W, W_in, u, 0.3, bias=bias, reverse=True).numpy()
    finally:
        torch.set_num_threads(previous)
    monkeypatch.setattr(engine, "SPARSE_DENSITY", 0.0)
    assert not engine.steps_sparse(torch.from_numpy(W))
    dense = esn_states(W, W_in, u, 0.3, bias=bias).numpy()
    assert np.abs(sparse - dense).max() < 1e-12
    assert np.abs(sparse - _reference(W, W_in, bias, 0.3, u)).max() < 1e-9
    assert np.abs(back - _reference(W, W_in, bias, 0.3, u[:, ::-1])[:, ::-1]).max() < 1e-9


def test_sparse_spectral_radius_matches_the_exact_radius_at_1000_units():
    import time

    from reservoirpy.mat_gen import normal
    from reservoirpy.utils.random import rand_generator

    from workloads.esn.reservoir import sparse_spectral_radius

    W = normal(1000, 1000, sr=None, connectivity=0.1, seed=rand_generator(3))
    exact = spectral_radius(W.toarray())
    t = time.perf_counter()
    fast = sparse_spectral_radius(W, seed=1)
    assert time.perf_counter() - t < 10  # ~0.1 s quiet
    assert abs(fast / exact - 1) < 1e-3, (fast, exact)
    assert sparse_spectral_radius(W, seed=1) == fast  # seeded: a regenerated reservoir is bit-identical
    # the radius-scaled draw equals reservoirpy's own up to the radius' last digits
    ref = random_reservoir(1000, 8, 0.9, 0.1, 0.1, 0.1, seed=5)
    quick = random_reservoir(1000, 8, 0.9, 0.1, 0.1, 0.1, seed=5, radius="arpack")
    np.testing.assert_array_equal(ref[1], quick[1])
    # the estimate is within 1e-4 of the exact radius on this draw (ARPACK asked for 1e-3), as is then W
    assert abs(spectral_radius(quick[0]) / 0.9 - 1) < 1e-4
    np.testing.assert_allclose(quick[0], ref[0], rtol=1e-4, atol=1e-12)
