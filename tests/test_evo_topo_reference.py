"""evo_topo's task against the reference's schedule rules (naomichx/ESN_RL_ICDL task.py + task.json, restated
here independently): the 72 boards x the 105 timing triplets, each encoded input checked step by step."""

from itertools import combinations, permutations

import numpy as np

from workloads.evo_topo.task import INPUT_DIM, N_STEPS, all_trials, encode, timing_options

# task.json: n_init_time 5, n_end_time 1; a trial lasts 30 steps; t1, t2 in 5..19, delay in 0..20.
INIT, END, LENGTH = 5, 1, 30


def reference_timings() -> set[tuple[int, int, int]]:
    """The reference's "overlap" options: the second stimulus starts while the first is on."""
    return {
        (t1, d, t2)
        for t1 in range(5, 20)
        for d in range(21)
        for t2 in range(5, 20)
        if INIT + d + t2 + END == LENGTH and d < t1
    }


def reference_boards() -> set[bytes]:
    """A trial as the reference's (cue, position) board: two 1s, no row or column with more than one."""
    boards = set()
    for cues in combinations(range(4), 2):
        for pos in permutations(range(4), 2):
            b = np.zeros((4, 4), dtype=np.int8)
            b[list(cues), list(pos)] = 1
            boards.add(b.tobytes())
    return boards


def test_timings_are_the_reference_105():
    ours = {tuple(int(v) for v in o) for o in timing_options()}
    assert len(reference_timings()) == 105
    assert ours == reference_timings()


def test_trials_are_the_reference_72_boards():
    ours = set()
    for (ca, pa), (cb, pb) in all_trials():
        b = np.zeros((4, 4), dtype=np.int8)
        b[[ca, cb], [pa, pb]] = 1
        ours.add(b.tobytes())
    assert len(ours) == 72 and ours == reference_boards()


def test_every_board_and_timing_follows_the_reference_schedule():
    trials = all_trials()
    timings = np.array(sorted(reference_timings()))
    stim = np.repeat(trials, len(timings), axis=0)  # 72 x 105 = 7560 trials, each board with each timing
    stim[1::2] = stim[1::2, ::-1]  # half of them with the other stimulus first
    timing = np.tile(timings, (len(trials), 1))
    u = encode(stim, timing)
    assert u.shape == (72 * 105, N_STEPS, INPUT_DIM)
    for k in range(len(u)):
        (c1, p1), (c2, p2) = stim[k]
        t1, d, t2 = timing[k]
        expected = np.zeros((LENGTH, INPUT_DIM))
        # The reference's chronogram: first stimulus after INIT blank steps for t1 steps; the second after
        # INIT + d for t2 steps, then END blank steps; block = [position one-hot, cue one-hot].
        expected[INIT : INIT + t1, [p1, 4 + c1]] = 1.0
        expected[INIT + d : INIT + d + t2, [8 + p2, 12 + c2]] = 1.0
        assert INIT + d + t2 + END == LENGTH
        np.testing.assert_array_equal(u[k], expected)
    assert np.all(u[:, -1] == 0)  # the decision step is blank
    assert np.all(u[:, :INIT] == 0)  # so are the first five
    onsets_2 = (u[:, :, 8:].sum(-1) > 0).argmax(1)
    assert set(onsets_2 - INIT) == set(range(5, 19))  # delays 5..18 occur (d < t1 <= 19): onsets vary
