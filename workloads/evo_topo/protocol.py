"""One draw of the protocol for a population: the readout learns on the training trials, then its choices on
the test trials, as the reference runs it: trials one after the other (train, then test), the reservoir state
carried from each trial into the next (``carry_state``), the readout's output fed back into the reservoir
(``fb_scaling``), state noise (``noise_rc``), the choice read at the trial's last (blank) step.

Two ways to compute it, the same numbers where both apply (tested):
- when the states do not depend on the readout (no feedback), the last state of every trial is computed
  first, then the readout runs on them: all trials as one batch (`esn_states`) when each starts from the zero
  state without noise, else trial after trial (`stepper.step`), the population batched either way;
- with feedback and the online readout, each trial's states depend on what the readout learned so far: the
  stepper and the readout alternate, trial by trial.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from workloads.esn.reservoir import esn_states
from workloads.esn.stepper import Population, step
from workloads.evo_topo.readout import OnlineReadout, OnlineRule, online_choices, ridge_choices
from workloads.evo_topo.task import N_POS, N_STEPS, Trials

BLOCK = 64  # trials whose input drive is computed by one matmul (bounded memory, few calls)


@dataclass(frozen=True)
class Dynamics:
    """How the reservoir runs and is read out (Params holds the values)."""

    leak: float
    carry_state: bool
    noise_rc: float
    feedback: bool  # fb_scaling > 0 (the weights themselves are in the padded batch)
    readout: str  # "online" | "ridge"
    ridge: float
    online: OnlineRule
    width: int  # the largest net of the run: per-neuron draws are made for this many and sliced
    dtype: str


def _population(batch: dict, dyn: Dynamics) -> Population:
    return Population.build(
        batch["W"],
        batch["W_in"],
        batch["bias"],
        dyn.leak,
        batch["W_fb"] if dyn.feedback else None,
        dyn.noise_rc,
        batch["valid"],
        dtype=np.dtype(dyn.dtype),
    )


def _noise_draws(rng: np.random.Generator, n_trials: int, width: int) -> np.ndarray:
    return rng.standard_normal((n_trials * N_STEPS, width))


def last_states(batch: dict, inputs: np.ndarray, dyn: Dynamics, noise_rng: np.random.Generator | None):
    """(P, B, N) float64 last state of every trial of ``inputs`` (B, T, 16), no feedback."""
    dt = np.dtype(dyn.dtype)
    if not dyn.carry_state and noise_rng is None:
        return (
            esn_states(
                batch["W"].astype(dt),
                batch["W_in"].astype(dt),
                inputs.astype(dt),
                dyn.leak,
                bias=batch["bias"].astype(dt),
                last_only=True,
            )
            .double()
            .numpy()
        )
    pop = _population(batch, dyn)
    P, N = pop.shape
    x = np.zeros((P, N), dt)
    out = np.empty((P, len(inputs), N))
    for start in range(0, len(inputs), BLOCK):
        block = inputs[start : start + BLOCK]
        drive = pop.drive(block.reshape(-1, block.shape[-1]))
        noise = pop.noise(_noise_draws(noise_rng, len(block), dyn.width)) if noise_rng is not None else None
        for k in range(len(block)):
            if not dyn.carry_state:
                x[:] = 0.0
            steps = slice(k * N_STEPS, (k + 1) * N_STEPS)
            step(pop, drive[steps], x, noise=None if noise is None else noise[steps])
            out[:, start + k] = x
    return out


def _online_with_feedback(
    batch: dict,
    train: Trials,
    test: Trials,
    dyn: Dynamics,
    rng: np.random.Generator,
    noise_rng: np.random.Generator | None,
) -> np.ndarray:
    """Stepper and online readout alternating trial by trial; (P, B_test) test choices."""
    pop = _population(batch, dyn)
    P, N = pop.shape
    dt = np.dtype(dyn.dtype)
    readout = OnlineReadout(batch["sizes"], N, dyn.width, len(train), dyn.online, rng)
    inputs = np.concatenate([train.inputs, test.inputs])
    x, y = np.zeros((P, N), dt), np.zeros((P, N_POS), dt)
    n_train = len(train)
    chosen = np.empty((P, len(test)), dtype=np.int64)
    for start in range(0, len(inputs), BLOCK):
        block = inputs[start : start + BLOCK]
        drive = pop.drive(block.reshape(-1, block.shape[-1]))
        noise = pop.noise(_noise_draws(noise_rng, len(block), dyn.width)) if noise_rng is not None else None
        for k in range(len(block)):
            t = start + k
            if not dyn.carry_state:
                x[:], y[:] = 0.0, 0.0
            steps = slice(k * N_STEPS, (k + 1) * N_STEPS)
            W_out = readout.W_out.astype(dt, copy=False)
            step(pop, drive[steps], x, y, W_out, None if noise is None else noise[steps])
            out = y.astype(np.float64)  # the readout's output at the last step (it is what feeds back)
            if t < n_train:
                choice = readout.choose(t, out)
                readout.learn(t, x.astype(np.float64), out, choice, train.stimuli[t])
            else:
                chosen[:, t - n_train] = out.argmax(-1)
    return chosen


def heldout_choices(batch: dict, train: Trials, test: Trials, dyn: Dynamics, seed: int) -> np.ndarray:
    """(P, B_test) choices on ``test`` after the readout learned on ``train``; ``seed`` gives the readout's and
    the noise's draws (shared by the population)."""
    readout_rng, noise_seed = (np.random.default_rng([seed, s]) for s in (0, 1))
    noise_rng = noise_seed if dyn.noise_rc > 0 else None
    if dyn.feedback:
        if dyn.readout != "online":
            raise ValueError("output feedback needs the online readout")
        return _online_with_feedback(batch, train, test, dyn, readout_rng, noise_rng)
    states = last_states(batch, np.concatenate([train.inputs, test.inputs]), dyn, noise_rng)
    n_train = len(train)
    X_train, X_test = states[:, :n_train], states[:, n_train:]
    if dyn.readout == "ridge":
        return ridge_choices(torch.from_numpy(X_train), train.correct, torch.from_numpy(X_test), dyn.ridge)
    return online_choices(X_train, train.stimuli, X_test, batch["sizes"], dyn.width, dyn.online, readout_rng)
