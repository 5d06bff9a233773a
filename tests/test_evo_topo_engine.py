"""The engine evo_topo's protocol runs on: the carried-state stepper (workloads/esn/stepper.py) against
reservoirpy's Reservoir with a bias, against a per-step loop written from the formula (feedback, noise), and
the protocol's fast and sequential paths against each other."""

import numpy as np
import pytest
from reservoirpy.nodes import Reservoir

from workloads.esn.reservoir import esn_states, random_reservoir
from workloads.esn.stepper import Population, step
from workloads.evo_topo import Params
from workloads.evo_topo.evaluate import EvalData
from workloads.evo_topo.experiment import dynamics, seed_draws
from workloads.evo_topo.nets import pad, random_net
from workloads.evo_topo.protocol import heldout_choices, last_states


def _trials_through_stepper(pop, u, carry):
    """Last state of each of the (B, T, D) trials, stepped one after the other."""
    P, N = pop.shape
    x = np.zeros((P, N))
    last = []
    for trial in u:
        if not carry:
            x[:] = 0
        step(pop, pop.drive(trial), x)
        last.append(x.copy())
    return np.stack(last, 1)  # (P, B, N)


def test_stepper_with_bias_and_carried_state_equals_reservoirpy():
    # reservoirpy 0.3's bias: +-1 with the input connectivity as density (most units non-zero)
    W, W_in, bias = random_reservoir(
        40,
        16,
        sr=0.9,
        input_scaling=1.0,
        rc_connectivity=0.2,
        input_connectivity=0.9,
        seed=2,
        bias_scaling=1.0,
        bias_connectivity=0.9,
    )
    assert 0.75 < np.mean(bias != 0) < 1 and set(np.unique(bias)) <= {-1.0, 0.0, 1.0}
    u = np.random.default_rng(0).random((6, 30, 16)) < 0.2
    ref = Reservoir(W=W, Win=W_in, bias=bias, lr=0.055, dtype=np.float64)
    states = np.asarray(ref.run(u.reshape(-1, 16).astype(float)))  # one long sequence: the state carries over
    carried = _trials_through_stepper(Population.build(W[None], W_in[None], bias[None], 0.055), u, carry=True)
    assert np.abs(carried[0] - states[29::30]).max() < 1e-9
    # Reset per trial: reservoirpy on each trial from 0, and the batched engine (esn_states) agree too
    reset = _trials_through_stepper(Population.build(W[None], W_in[None], bias[None], 0.055), u, carry=False)
    per_trial = np.asarray(Reservoir(W=W, Win=W_in, bias=bias, lr=0.055).run(u.astype(float)))[:, -1]
    assert np.abs(reset[0] - per_trial).max() < 1e-9
    assert (
        np.abs(esn_states(W, W_in, u.astype(float), 0.055, bias=bias, last_only=True).numpy() - per_trial).max() < 1e-9
    )
    assert np.abs(carried[0] - reset[0]).max() > 1e-3  # carrying the state changes the states: the check can fail


def _naive(W, W_in, b, W_fb, W_out, leak, gain, xi, u):
    """x_t = (1-a) x + a tanh(W x + W_in u + b + W_fb y) + gain xi_t, y_t = W_out^T x_t, one step at a time."""
    x, y = np.zeros(len(W)), np.zeros(W_out.shape[1])
    for t in range(len(u)):
        x = (1 - leak) * x + leak * np.tanh(W @ x + W_in @ u[t] + b + W_fb @ y) + gain * xi[t, : len(W)]
        y = W_out.T @ x
    return x, y


def test_stepper_feedback_and_noise_equal_the_formula_and_padding_stays_zero():
    rng = np.random.default_rng(1)
    sizes, n, width = (5, 9), 9, 12
    nets = [
        (
            rng.normal(size=(k, k)) * 0.3,
            rng.normal(size=(k, 16)),
            rng.uniform(-1, 1, k),
            rng.normal(size=(k, 4)) * 0.5,
            rng.uniform(size=(k, 4)),
        )
        for k in sizes
    ]
    W, W_in, b, W_fb, W_out = (
        np.zeros((2, n, n)),
        np.zeros((2, n, 16)),
        np.zeros((2, n)),
        np.zeros((2, n, 4)),
        np.zeros((2, n, 4)),
    )
    valid = np.zeros((2, n))
    for p, (w, wi, bb, fb, wo) in enumerate(nets):
        k = len(w)
        W[p, :k, :k], W_in[p, :k], b[p, :k], W_fb[p, :k], W_out[p, :k], valid[p, :k] = w, wi, bb, fb, wo, 1
    pop = Population.build(W, W_in, b, 0.2, W_fb, noise_gain=0.01, valid=valid)
    u, xi = rng.random((25, 16)), rng.standard_normal((25, width))
    x, y = np.zeros((2, n)), np.zeros((2, 4))
    step(pop, pop.drive(u[:10]), x, y, W_out, pop.noise(xi[:10]))  # two calls: y carries over between them
    step(pop, pop.drive(u[10:]), x, y, W_out, pop.noise(xi[10:]))
    for p, (w, wi, bb, fb, wo) in enumerate(nets):
        xr, yr = _naive(w, wi, bb, fb, wo, 0.2, 0.01, xi, u)
        k = len(w)
        assert np.abs(x[p, :k] - xr).max() < 1e-12 and np.abs(y[p] - yr).max() < 1e-12
        assert np.all(x[p, k:] == 0)  # padding: no weights, masked noise
    x0 = np.zeros((2, n))
    step(Population.build(W, W_in, b, 0.2), pop.drive(u), x0)
    assert np.abs(x0 - x).max() > 1e-4  # feedback and noise matter: the check can fail


def _batch(units=(7, 12), **kw):
    p = Params(units=max(units), max_neurons=max(units), **kw)
    draws = seed_draws(p, 0)
    nets = [random_net(k, 0.5, 1.0, 0.3, 0.9, 1.0, seed=k) for k in units]
    return p, pad(nets, draws)


def test_fast_batched_path_equals_the_stepper_path():
    p, batch = _batch(carry_state=False, noise_rc=0.0, fb_scaling=0.0)
    u = EvalData.draw(30, 8, [0]).train.inputs
    dyn = dynamics(p)
    fast = last_states(batch, u, dyn, None)  # all trials in one batch
    sequential = last_states(
        batch, u, dyn.__class__(**{**dyn.__dict__, "noise_rc": 1e-300}), np.random.default_rng(0)
    )  # forced through the stepper (noise ~0)
    assert np.abs(fast - sequential).max() < 1e-5  # float32 engine


@pytest.mark.parametrize("readout", ["online", "ridge"])
def test_interleaved_feedback_path_at_zero_feedback_equals_the_offline_readout(readout):
    """With feedback weights all 0, alternating stepper and readout gives the choices of the readout run on
    precomputed states: the two code paths agree."""
    p, batch = _batch(fb_scaling=0.0, readout=readout, dtype="float64")
    data = EvalData.draw(150, 60, [3])
    offline = heldout_choices(batch, data.train, data.test, dynamics(p), data.seed)
    if readout == "online":
        dyn = dynamics(p).__class__(**{**dynamics(p).__dict__, "feedback": True})
        assert np.all(batch["W_fb"] == 0)
        np.testing.assert_array_equal(heldout_choices(batch, data.train, data.test, dyn, data.seed), offline)
    assert offline.shape == (2, 60) and len(np.unique(offline)) > 1
