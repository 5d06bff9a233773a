"""The cue/position choice task of Chaix-Eichel et al. (arXiv 2401.10849; science.md).

4 cues x 4 positions; a trial shows 2 different cues at 2 different positions: C(4,2) x P(4,2) = 72 distinct
trials, presented in epochs (each epoch a fresh shuffle of all 72). Input, 16-d: one 8-d block per stimulus
in order of appearance, each [position one-hot(4), cue one-hot(4)] times a rectangular time course: 5 blank
steps, the first stimulus on for t1 in 5..19 steps; the second starts `delay` in 0..20 steps after the first,
always overlaps it (delay < t1) and stays on until the end of the 30-step trial (5 + delay + t2 = 30, t2 in
5..19). Which stimulus comes first is a fair coin. The choice (one of 4 positions) is read at the last step;
correct = the position of the highest-valued cue (values 1.0, 0.75, 0.5, 0.25 for cues 0..3).
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations, permutations

import numpy as np

N_CUE, N_POS, INPUT_DIM, N_STEPS, N_BLANK = 4, 4, 16, 30, 5
CUE_VALUES = np.array([1.0, 0.75, 0.5, 0.25])
PENALTY = -0.01  # reward for choosing an empty position


def all_trials() -> np.ndarray:
    """The 72 distinct trials as (72, 2, 2) int: trial[k] = [[cue_a, pos_a], [cue_b, pos_b]] (cue_a < cue_b)."""
    return np.array([[[ca, pa], [cb, pb]] for ca, cb in combinations(range(N_CUE), 2)
                     for pa, pb in permutations(range(N_POS), 2)])


def timing_options() -> np.ndarray:
    """Every allowed (t1, delay, t2): first on for t1 steps, second starts delay steps later, overlaps the
    first (delay < t1) and ends with the trial (N_BLANK + delay + t2 == N_STEPS)."""
    return np.array([(t1, d, N_STEPS - N_BLANK - d) for t1 in range(5, 20) for d in range(0, 21)
                     if 5 <= N_STEPS - N_BLANK - d <= 19 and d < t1])


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
    on = np.stack([(t >= N_BLANK) & (t < N_BLANK + t1),  # first stimulus
                   t >= N_BLANK + delay], axis=1)  # second stimulus: until the end of the trial
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
