"""Population fitness: every genome of a population on the same trials in one batched engine call.

Genomes of different sizes are zero-padded to the largest (a padding neuron stays at 0 in the engine and is
masked out of the readouts), W is rescaled to the spectral radius (unless a genome's radius is ~0:
nilpotent ternary matrices are common, stack.md), W_in is scaled by input_scaling, and the last state of
every trial feeds the readout. Fitness = choice accuracy on held-out trials.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from dataclasses import dataclass

import numpy as np
import torch

from workloads.esn.reservoir import esn_states
from workloads.evo_topo.genome import split
from workloads.evo_topo.readout import OnlineRule, online_choices, ridge_choices
from workloads.evo_topo.task import INPUT_DIM, N_BLANK, Trials, make_trials


@dataclass(frozen=True)
class EvalConfig:
    """How a genome is turned into a reservoir and read out."""

    leak: float = 0.3
    input_scaling: float = 1.0
    sr: float = 0.9
    sr_rescale: bool = True
    readout: str = "ridge"
    ridge: float = 1e-3
    online: OnlineRule = OnlineRule()
    dtype: str = "float64"  # engine precision; readouts always solve in float64


@dataclass
class EvalData:
    """Fixed trials for one fitness: readout training trials, held-out scoring trials, and the seed of the
    online readout's shared random draws."""

    train: Trials
    test: Trials
    online_seed: int

    @classmethod
    def draw(cls, n_train: int, n_test: int, seed_seq: list[int]) -> EvalData:
        rng = np.random.default_rng(seed_seq)
        return cls(make_trials(n_train, rng), make_trials(n_test, rng), int(rng.integers(2**31)))


def batched_spectral_radius(W: np.ndarray) -> np.ndarray:
    """(P,) spectral radii of (P, N, N) matrices (padding adds zero eigenvalues only)."""
    return np.abs(np.linalg.eigvals(W)).max(axis=-1)


def pad(genomes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W (P, N, N), W_in (P, N, 16), n_neurons (P,)) with N the largest genome, zero-padded."""
    sizes = np.array([g.shape[0] for g in genomes])
    n = int(sizes.max())
    W = np.zeros((len(genomes), n, n))
    W_in = np.zeros((len(genomes), n, INPUT_DIM))
    for p, g in enumerate(genomes):
        w, w_in = split(g)
        W[p, : len(w), : len(w)] = w
        W_in[p, : len(w)] = w_in
    return W, W_in, sizes


def reservoir_matrices(genomes: list[np.ndarray], cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded (W, W_in, n_neurons) as the engine runs them: radius rescaled, inputs scaled."""
    W, W_in, sizes = pad(genomes)
    if cfg.sr_rescale:
        radius = batched_spectral_radius(W)
        scale = np.where(radius > 1e-9, cfg.sr / np.maximum(radius, 1e-300), 1.0)
        W = W * scale[:, None, None]
    return W, W_in * cfg.input_scaling, sizes


def choices(genomes: list[np.ndarray], data: EvalData, cfg: EvalConfig) -> tuple[np.ndarray, np.ndarray]:
    """(P, B_test) choices of every genome on data.test, after its readout learned on data.train."""
    W, W_in, sizes = reservoir_matrices(genomes, cfg)
    # The N_BLANK leading steps carry no input and genomes have no bias: the state stays exactly 0 there,
    # so the engine starts at the first stimulus (same states, 1/6 less work).
    inputs = np.concatenate([data.train.inputs, data.test.inputs])[:, N_BLANK:]
    dt = np.dtype(cfg.dtype)
    last = esn_states(W.astype(dt), W_in.astype(dt), inputs.astype(dt), cfg.leak, last_only=True).double()
    n_train = len(data.train)
    X_train, X_test = last[:, :n_train], last[:, n_train:]
    if cfg.readout == "ridge":
        chosen = ridge_choices(X_train, data.train.correct, X_test, cfg.ridge)
    else:
        chosen = online_choices(X_train, data.train.stimuli, X_test, sizes, cfg.online,
                                np.random.default_rng(data.online_seed))
    return chosen, data.test.correct


def fitness(genomes: list[np.ndarray], data: EvalData, cfg: EvalConfig) -> np.ndarray:
    """(P,) choice accuracy on the held-out trials."""
    chosen, correct = choices(genomes, data, cfg)
    return (chosen == correct[None]).mean(axis=1)


_WORKER: dict = {}  # in a pool process: the EvalData and EvalConfig, sent once at start


def _init_worker(data: EvalData, cfg: EvalConfig) -> None:
    torch.set_num_threads(1)  # one core per process: the per-step loop collapses with more (stack.md)
    _WORKER.update(data=data, cfg=cfg)


def _worker_fitness(genomes: list[np.ndarray]) -> np.ndarray:
    return fitness(genomes, _WORKER["data"], _WORKER["cfg"])


class PopulationEvaluator:
    """Fitness of a population: one vectorised call, or, with ``workers`` > 1, the population split into
    contiguous chunks evaluated in worker processes (same numbers: evaluation has no randomness of its own).
    The trials go to each worker once, at start; a generation then ships only its genomes."""

    def __init__(self, data: EvalData, cfg: EvalConfig, workers: int = 1):
        self.data, self.cfg, self.workers = data, cfg, max(1, int(workers))
        self._pool: cf.ProcessPoolExecutor | None = None

    def __call__(self, genomes: list[np.ndarray]) -> np.ndarray:
        if not genomes:
            return np.zeros(0)
        if self.workers == 1 or len(genomes) < 2 * self.workers:
            return fitness(genomes, self.data, self.cfg)
        if self._pool is None:  # spawn: a clean interpreter, no forked torch/BLAS thread state
            self._pool = cf.ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"),
                                                initializer=_init_worker, initargs=(self.data, self.cfg))
        chunks = np.array_split(np.arange(len(genomes)), self.workers)
        futures = [self._pool.submit(_worker_fitness, [genomes[i] for i in c]) for c in chunks]
        return np.concatenate([f.result() for f in futures])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
