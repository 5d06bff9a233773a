"""Scores of a population of nets: every net on the same trials, in one batched protocol run per draw.

A draw (`EvalData`) is a readout training set, held-out trials and the seed of the draws shared by the
population (readout, noise). Scores per net: choice accuracy, accuracy when the best cue came first / last
(the paper's split) and the rate of legal choices (an occupied position). Fitness averages the accuracy over
several draws, so that selection does not fit the luck of one draw.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
from dataclasses import dataclass

import numpy as np
import torch

from workloads.evo_topo.nets import Net, SeedDraws, pad
from workloads.evo_topo.protocol import Dynamics, heldout_choices
from workloads.evo_topo.task import Trials, make_trials

SCORES = ("accuracy", "best_first_accuracy", "best_last_accuracy", "legal_rate")


@dataclass
class EvalData:
    """One draw: trials the readout learns from, held-out trials it is scored on, the seed of its draws."""

    train: Trials
    test: Trials
    seed: int

    @classmethod
    def draw(cls, n_train: int, n_test: int, seed_seq: list[int]) -> EvalData:
        rng = np.random.default_rng(seed_seq)
        return cls(make_trials(n_train, rng), make_trials(n_test, rng), int(rng.integers(2**31)))


def score_choices(chosen: np.ndarray, test: Trials) -> dict[str, np.ndarray]:
    """(P,) scores of (P, B) choices on the test trials."""
    correct = chosen == test.correct[None]
    first = test.best_first
    return {
        "accuracy": correct.mean(1),
        "best_first_accuracy": correct[:, first].mean(1),
        "best_last_accuracy": correct[:, ~first].mean(1),
        "legal_rate": test.legal(chosen).mean(1),
    }


def scores(nets: list[Net], data: EvalData, dyn: Dynamics, draws: SeedDraws) -> dict[str, np.ndarray]:
    """Every score of every net on one draw."""
    return score_choices(heldout_choices(pad(nets, draws), data.train, data.test, dyn, data.seed), data.test)


def mean_scores(nets: list[Net], datas: list[EvalData], dyn: Dynamics, draws: SeedDraws) -> dict[str, np.ndarray]:
    """Scores averaged over draws, (P,) each; also ``accuracy_std`` over the draws."""
    per = [scores(nets, d, dyn, draws) for d in datas]
    out = {k: np.mean([s[k] for s in per], axis=0) for k in SCORES}
    out["accuracy_std"] = np.std([s["accuracy"] for s in per], axis=0)
    return out


_WORKER: dict = {}  # in a pool process: the Dynamics and SeedDraws, sent once at start


def _init_worker(dyn: Dynamics, draws: SeedDraws) -> None:
    torch.set_num_threads(1)  # one core per process: the per-step loop collapses with more
    _WORKER.update(dyn=dyn, draws=draws)


def _worker_accuracy(nets: list[Net], datas: list[EvalData]) -> np.ndarray:
    return mean_scores(nets, datas, _WORKER["dyn"], _WORKER["draws"])["accuracy"]


class PopulationEvaluator:
    """Mean accuracy of a population over given draws: one vectorised call, or, with ``workers`` > 1, the
    population split into contiguous chunks evaluated in worker processes (the same numbers: nets are
    evaluated on shared draws, so a chunk's scores do not depend on the other chunks)."""

    def __init__(self, dyn: Dynamics, draws: SeedDraws, workers: int = 1):
        self.dyn, self.draws, self.workers = dyn, draws, max(1, int(workers))
        self._pool: cf.ProcessPoolExecutor | None = None

    def __call__(self, nets: list[Net], datas: list[EvalData]) -> np.ndarray:
        if not nets:
            return np.zeros(0)
        if self.workers == 1 or len(nets) < 2 * self.workers:
            return mean_scores(nets, datas, self.dyn, self.draws)["accuracy"]
        if self._pool is None:  # spawn: a clean interpreter, no forked torch/BLAS thread state
            self._pool = cf.ProcessPoolExecutor(
                self.workers,
                mp_context=mp.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self.dyn, self.draws),
            )
        chunks = np.array_split(np.arange(len(nets)), self.workers)
        futures = [self._pool.submit(_worker_accuracy, [nets[i] for i in c], datas) for c in chunks]
        return np.concatenate([f.result() for f in futures])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
