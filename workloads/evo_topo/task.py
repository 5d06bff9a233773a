"""The cue/position choice task of Chaix-Eichel et al. (arXiv 2401.10849; docs/evo_topo.md).

4 cues x 4 positions; a trial shows 2 different cues at 2 different positions: C(4,2) x P(4,2) = 72 distinct
trials, presented in epochs (each epoch a fresh shuffle of all 72). Input, 16-d: one 8-d block per stimulus
in order of appearance, each [position one-hot(4), cue one-hot(4)] times a rectangular time course, as the
reference's task.json and chronogram lay it out: 5 blank steps, the first stimulus on for t1 in 5..19 steps;
the second starts `delay` steps after the first, while the first is still on (delay < t1), and stays on until
one step before the end: every trial ends with N_END = 1 blank decision step (5 + delay + t2 + 1 = 30, t2 in
5..19): 105 timing triplets. Which stimulus comes first is a fair coin. The choice (one of 4 positions) is read
at the last step, when the input is all zero; correct = the position of the highest-valued cue (values 1.0,
0.75, 0.5, 0.25 for cues 0..3).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, permutations

import numpy as np

N_CUE, N_POS, INPUT_DIM, N_STEPS, N_BLANK, N_END = 4, 4, 16, 30, 5, 1
CUE_VALUES = np.array([1.0, 0.75, 0.5, 0.25])
PENALTY = -0.01  # reward for choosing an empty position


def all_trials() -> np.ndarray:
    """The 72 distinct trials as (72, 2, 2) int: trial[k] = [[cue_a, pos_a], [cue_b, pos_b]] (cue_a < cue_b)."""
    return np.array(
        [[[ca, pa], [cb, pb]] for ca, cb in combinations(range(N_CUE), 2) for pa, pb in permutations(range(N_POS), 2)]
    )


def timing_options() -> np.ndarray:
    """Every allowed (t1, delay, t2), the reference's "overlap" options: t1 and t2 in 5..19, delay in 0..20,
    the second starts while the first is on (delay < t1) and ends one blank decision step before the end
    (N_BLANK + delay + t2 + N_END == N_STEPS): 105 triplets."""
    return np.array(
        [
            (t1, d, t2)
            for t1 in range(5, 20)
            for d in range(0, 21)
            for t2 in range(5, 20)
            if N_BLANK + d + t2 + N_END == N_STEPS and d < t1
        ]
    )


@dataclass
class Trials:
    """A batch of trials. ``inputs`` (B, T, 16); ``stimuli`` (B, 2, 2) [cue, pos] in order of appearance;
    ``timing`` (B, 3) (t1, delay, t2); ``correct`` (B,) the position of the best cue."""

    inputs: np.ndarray
    stimuli: np.ndarray
    timing: np.ndarray
    correct: np.ndarray

    def __len__(self) -> int:
        return len(self.correct)

    @property
    def best_first(self) -> np.ndarray:
        """(B,) whether the best cue was the first stimulus shown (the paper's best-first / best-last split)."""
        return self.stimuli[:, 0, 0] < self.stimuli[:, 1, 0]

    def legal(self, choice: np.ndarray) -> np.ndarray:
        """(..., B) whether each choice is an occupied position (a legal choice, in the paper's words)."""
        return (self.stimuli[..., 1] == np.asarray(choice)[..., None]).any(-1)


def correct_position(stimuli: np.ndarray) -> np.ndarray:
    """Position of the highest-valued (lowest-index) cue of each trial; stimuli (B, 2, 2)."""
    best = np.argmax(CUE_VALUES[stimuli[..., 0]], axis=-1)
    return stimuli[np.arange(len(stimuli)), best, 1]


def encode(stimuli: np.ndarray, timing: np.ndarray) -> np.ndarray:
    """The (B, T, 16) input of trials: block k (dims 8k..8k+7) = [pos one-hot, cue one-hot] of the k-th
    stimulus to appear, on during its time window."""
    b = len(stimuli)
    t = np.arange(N_STEPS)
    t1, delay = timing[:, 0:1], timing[:, 1:2]
    t2 = timing[:, 2:3]
    on = np.stack(
        [
            (t >= N_BLANK) & (t < N_BLANK + t1),  # first stimulus
            (t >= N_BLANK + delay) & (t < N_BLANK + delay + t2),
        ],
        axis=1,
    )  # second: off at the decision
    code = np.zeros((b, 2, 8))
    rows = np.arange(b)[:, None]
    code[rows, [0, 1], stimuli[..., 1]] = 1.0  # position one-hot
    code[rows, [0, 1], 4 + stimuli[..., 0]] = 1.0  # cue one-hot
    # (B, 2, T) time course x (B, 2, 8) code -> (B, T, 2, 8) -> (B, T, 16)
    return (on[:, :, :, None] * code[:, :, None, :]).transpose(0, 2, 1, 3).reshape(b, N_STEPS, INPUT_DIM)


def make_trials(n: int, rng: np.random.Generator) -> Trials:
    """``n`` trials: epochs of the 72 trials, each epoch reshuffled; a random timing and order per trial."""
    base = all_trials()
    order = np.concatenate([rng.permutation(len(base)) for _ in range(-(-n // len(base)))])[:n]
    stimuli = base[order].copy()
    swap = rng.random(n) < 0.5  # which stimulus appears first: a fair coin
    stimuli[swap] = stimuli[swap][:, ::-1]
    options = timing_options()
    timing = options[rng.integers(len(options), size=n)]
    return Trials(encode(stimuli, timing), stimuli, timing, correct_position(stimuli))


def reward(stimuli: np.ndarray, choice: np.ndarray, uniform: np.ndarray, stochastic: bool) -> np.ndarray:
    """Reward of each choice: the chosen cue's value, paid with probability = that value (stochastic) or
    always (deterministic); PENALTY for an empty position. ``uniform`` (B,) are U(0,1) draws (given, so
    that callers control the randomness)."""
    hit = stimuli[..., 1] == choice[..., None]  # (..., 2): which stimulus sits at the chosen position
    legal = hit.any(-1)
    cue = np.where(hit[..., 0], stimuli[..., 0, 0], stimuli[..., 1, 0])
    value = CUE_VALUES[cue]
    paid = (uniform < value) if stochastic else np.ones_like(legal)
    return np.where(legal, np.where(paid, value, 0.0), PENALTY)


def oracle_choice(inputs: np.ndarray) -> np.ndarray:
    """Reads each stimulus's cue and position off the input and picks the best cue's position: the
    ceiling any model can reach (100% on every trial)."""
    seen = inputs.max(axis=1).reshape(len(inputs), 2, 8)  # (B, 2, 8): each block's code while on
    pos, cue = seen[..., :4].argmax(-1), seen[..., 4:].argmax(-1)
    best = np.argmax(CUE_VALUES[cue], axis=-1)
    return pos[np.arange(len(inputs)), best]
