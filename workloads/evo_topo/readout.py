"""Readouts of the choice from the reservoir's last state, batched over a population.

- ``ridge``: supervised ridge regression onto the one-hot correct position (fast; the default fitness).
- ``online``: the reference paper's reward-learning readout (science.md): epsilon-greedy choice from a
  softmax_beta of W_out x, update W_out[:, c] += eta (r - softmax(out)[c]) (x - r_th), masked to the
  readout's initial sparsity, columns renormalised. Randomness (initial W_out, exploration, reward draws)
  is drawn once from the given generator and shared by every individual (common random numbers: a
  population is compared on the same luck, and a split across processes gives the same result).
States are (P, B, N) torch or numpy; padded neurons (state 0) are masked out of W_out by ``n_neurons``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workloads.esn.ridge import ridge_solve  # the shared batched solver (esn_distill's module)
from workloads.evo_topo.task import N_POS, reward


def ridge_choices(X_train, correct_train: np.ndarray, X_test, ridge: float) -> np.ndarray:
    """Fit one ridge readout per individual on (P, B, N) states -> one-hot correct position (intercept
    fitted unpenalised, by centring, as reservoirpy's Ridge does); return the (P, B_test) argmax choices."""
    X, X_test = torch.as_tensor(X_train).double(), torch.as_tensor(X_test).double()
    Y = torch.nn.functional.one_hot(torch.as_tensor(correct_train), N_POS).to(X.dtype)
    x_mean, y_mean = X.mean(-2, keepdim=True), Y.mean(-2, keepdim=True)  # (P, 1, N), (1, 4)
    Xc = X - x_mean
    W_out = ridge_solve(Xc.transpose(-1, -2) @ Xc, Xc.transpose(-1, -2) @ (Y - y_mean), ridge)  # (P, N, 4)
    bias = y_mean - x_mean @ W_out  # (P, 1, 4)
    return (X_test @ W_out + bias).argmax(-1).cpu().numpy()


@dataclass(frozen=True)
class OnlineRule:
    """The reward-learning rule's constants (reference values: science.md / M_0.json)."""

    eta: float = 0.0045
    beta: float = 16.0
    r_th: float = 0.0
    epsilon_decay: float = 0.75
    output_connectivity: float = 0.865
    stochastic: bool = False


def online_choices(X_train, stimuli_train: np.ndarray, X_test, n_neurons: np.ndarray, rule: OnlineRule,
                   rng: np.random.Generator) -> np.ndarray:
    """Learn W_out trial by trial from rewards (all individuals in step), then return the greedy (P, B_test)
    choices on the test states with W_out frozen."""
    X = np.asarray(torch.as_tensor(X_train).cpu().numpy(), dtype=np.float64)
    P, B, N = X.shape
    valid = np.arange(N)[None, :] < np.asarray(n_neurons)[:, None]  # (P, N): real (non-padding) neurons
    init = rng.uniform(0.0, 1.0, size=(N, N_POS)) * (rng.random((N, N_POS)) < rule.output_connectivity)
    mask = (init != 0)[None] & valid[:, :, None]  # (P, N, 4)
    W_out = np.where(mask, init[None], 0.0)
    explore_u, random_choice = rng.random(B), rng.integers(N_POS, size=B)
    reward_u = rng.random(B)
    epsilon = 1.0
    rows = np.arange(P)
    for t in range(B):
        x = X[:, t]  # (P, N)
        out = np.einsum("pn,pnk->pk", x, W_out)
        z = rule.beta * (out - out.max(-1, keepdims=True))  # stable softmax
        prob = np.exp(z)
        prob /= prob.sum(-1, keepdims=True)
        greedy = out.argmax(-1)
        choice = np.full(P, random_choice[t]) if explore_u[t] < epsilon else greedy
        epsilon *= rule.epsilon_decay
        r = reward(stimuli_train[t][None], choice, np.full(P, reward_u[t]), rule.stochastic)
        delta = rule.eta * (r - prob[rows, choice])  # (P,)
        W_out[rows, :, choice] += delta[:, None] * (x - rule.r_th)
        W_out *= mask
        norm = np.linalg.norm(W_out, axis=1, keepdims=True)  # (P, 1, 4): column norms
        W_out = np.where(norm > 0, W_out / np.where(norm > 0, norm, 1.0), W_out)
    X_test = np.asarray(torch.as_tensor(X_test).cpu().numpy(), dtype=np.float64)
    return np.einsum("pbn,pnk->pbk", X_test, W_out).argmax(-1)
