"""Readouts of the choice from the reservoir's last state, batched over a population.

- ``online`` (the paper's protocol): the reference's reward-learning readout. Output ``out = W_out^T x``
  (W_out (N, 4) starts uniform in [0, 1] with density output_connectivity); epsilon-greedy choice (epsilon
  starts at 1, x epsilon_decay per trial); after the reward r, W_out[:, c] += eta (r - softmax_beta(out)[c])
  (x - r_th), masked to the initial sparsity, every column renormalised to unit norm. Learned over the
  training trials, then frozen and greedy. Its random draws (initial W_out, exploration, reward payments)
  come from one generator and are shared by every individual (common random numbers: a population is
  compared on the same luck, and a split across processes gives the same result); W_out is drawn for
  ``width`` neurons and sliced, so a net's draw does not depend on the population it is evaluated in.
- ``ridge`` (the "supervised readout", not the paper's protocol): ridge regression onto the one-hot correct
  position. It is told the answer on every training trial, and makes the task nearly trivial.
States are (P, B, N); padded neurons (state 0) are masked out of W_out by ``n_neurons``.
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
    """The reward-learning rule's constants (Params holds their values)."""

    eta: float
    beta: float
    r_th: float
    epsilon_decay: float
    output_connectivity: float
    stochastic: bool


class OnlineReadout:
    """W_out of P individuals learning in step, one trial at a time: `choose` then `learn`."""

    def __init__(
        self, n_neurons: np.ndarray, n: int, width: int, n_train: int, rule: OnlineRule, rng: np.random.Generator
    ):
        self.rule, self.P = rule, len(n_neurons)
        valid = np.arange(n)[None, :] < np.asarray(n_neurons)[:, None]  # (P, n): real (non-padding) neurons
        init = rng.uniform(0.0, 1.0, size=(width, N_POS)) * (rng.random((width, N_POS)) < rule.output_connectivity)
        self.mask = ((init[:n] != 0)[None] & valid[:, :, None]).astype(np.float64)  # (P, n, 4), 1.0 or 0.0
        self.W_out = init[None, :n] * self.mask
        self.explore_u, self.random_choice = rng.random(n_train), rng.integers(N_POS, size=n_train)
        self.reward_u = rng.random(n_train)
        self.epsilon = 1.0
        self._rows = np.arange(self.P)

    def choose(self, t: int, out: np.ndarray) -> np.ndarray:
        """(P,) choices of training trial ``t`` from the outputs (P, 4): a shared random position while
        exploring (probability epsilon), else each individual's argmax; epsilon then decays."""
        explore = self.explore_u[t] < self.epsilon
        self.epsilon *= self.rule.epsilon_decay
        return np.full(self.P, self.random_choice[t]) if explore else out.argmax(-1)

    def learn(self, t: int, x: np.ndarray, out: np.ndarray, choice: np.ndarray, stimuli: np.ndarray) -> None:
        """The reward update after training trial ``t``: state x (P, N), outputs (P, 4), stimuli (2, 2)."""
        rule = self.rule
        r = reward(stimuli[None], choice, np.full(self.P, self.reward_u[t]), rule.stochastic)
        z = rule.beta * (out - out.max(-1, keepdims=True))  # the same softmax, without overflow
        prob = np.exp(z)
        prob /= prob.sum(-1, keepdims=True)
        delta = rule.eta * (r - prob[self._rows, choice])  # (P,)
        W = self.W_out
        W[self._rows, :, choice] += delta[:, None] * (x - rule.r_th)
        W *= self.mask
        # (P, 1, 4) column norms, as np.linalg.norm computes them, without its per-call overhead
        norm = np.sqrt(np.add.reduce(W * W, axis=1, keepdims=True))  # a zero column stays 0 below
        np.divide(W, norm, out=W, where=norm > 0)

    def output(self, x: np.ndarray) -> np.ndarray:
        """(P, 4) outputs W_out^T x for states x (P, N)."""
        return np.einsum("pn,pnk->pk", x, self.W_out)


def online_choices(
    X_train,
    stimuli_train: np.ndarray,
    X_test,
    n_neurons: np.ndarray,
    width: int,
    rule: OnlineRule,
    rng: np.random.Generator,
) -> np.ndarray:
    """The online readout on precomputed last states (valid when the states do not depend on the readout:
    no feedback): learn over the (P, B, N) training states, then the greedy (P, B_test) test choices."""
    X = np.asarray(X_train, dtype=np.float64)
    readout = OnlineReadout(n_neurons, X.shape[-1], width, X.shape[1], rule, rng)
    for t in range(X.shape[1]):
        out = readout.output(X[:, t])
        readout.learn(t, X[:, t], out, readout.choose(t, out), stimuli_train[t])
    return np.einsum("pbn,pnk->pbk", np.asarray(X_test, dtype=np.float64), readout.W_out).argmax(-1)
