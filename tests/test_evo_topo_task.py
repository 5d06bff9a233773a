"""evo_topo's task: the 72 trials, the time courses and onset rule, the correct answer, rewards, oracle."""

import numpy as np

from workloads.evo_topo.task import (
    CUE_VALUES,
    N_BLANK,
    N_END,
    N_STEPS,
    PENALTY,
    all_trials,
    correct_position,
    encode,
    make_trials,
    oracle_choice,
    reward,
    timing_options,
)


def test_72_distinct_trials_of_two_cues_at_two_positions():
    trials = all_trials()
    assert trials.shape == (72, 2, 2)
    assert len({t.tobytes() for t in trials}) == 72
    assert np.all(trials[:, 0, 0] != trials[:, 1, 0]) and np.all(trials[:, 0, 1] != trials[:, 1, 1])
    cue_pairs = {tuple(sorted(t[:, 0])) for t in trials}
    pos_pairs = {tuple(t[:, 1]) for t in trials}
    assert len(cue_pairs) == 6 and len(pos_pairs) == 12  # C(4,2) x P(4,2)


def test_timing_rule_overlap_and_a_blank_decision_step():
    opts = timing_options()
    t1, delay, t2 = opts.T
    assert np.all((t1 >= 5) & (t1 <= 19) & (t2 >= 5) & (t2 <= 19) & (delay >= 0) & (delay <= 20))
    assert np.all(delay < t1)  # the second stimulus starts while the first is on
    assert np.all(N_BLANK + delay + t2 + N_END == N_STEPS)
    assert delay.min() == 5 and delay.max() == 18  # t2 <= 19 and the end at step 29; d < t1 <= 19
    assert len({tuple(o) for o in opts}) == len(opts) == 105


def test_encoding_rectangular_time_courses():
    stimuli = np.array([[[2, 3], [0, 1]]])  # cue 2 at position 3 first, then cue 0 at position 1
    timing = np.array([[12, 8, 16]])
    u = encode(stimuli, timing)[0]
    assert u.shape == (30, 16)
    on1 = np.zeros(30, bool)
    on1[5:17] = True
    on2 = np.zeros(30, bool)
    on2[13:29] = True  # off at the decision step
    expected = np.zeros((30, 16))
    expected[on1, 3] = expected[on1, 4 + 2] = 1  # block 1: position one-hot then cue one-hot
    expected[on2, 8 + 1] = expected[on2, 8 + 4 + 0] = 1
    np.testing.assert_array_equal(u, expected)
    assert correct_position(stimuli)[0] == 1  # cue 0 (value 1.0) sits at position 1


def test_epochs_cover_all_72_and_reshuffle():
    tr = make_trials(216, np.random.default_rng(0))
    canon = np.sort(tr.stimuli, axis=1)  # undo the presentation order
    keys = [[c.tobytes() for c in canon[e * 72 : (e + 1) * 72]] for e in range(3)]
    base = {np.sort(t, axis=0).tobytes() for t in all_trials()}
    for epoch in keys:
        assert set(epoch) == base and len(epoch) == 72
    assert keys[0] != keys[1]  # a new shuffle each epoch
    best_first = tr.stimuli[:, 0, 0] < tr.stimuli[:, 1, 0]
    assert 0.35 < best_first.mean() < 0.65
    assert len({tuple(t) for t in tr.timing}) > 30  # onsets vary trial to trial
    assert np.array_equal(make_trials(216, np.random.default_rng(0)).inputs, tr.inputs)  # seeded


def test_correct_answer_and_oracle_scores_100_percent():
    tr = make_trials(500, np.random.default_rng(1))
    best_cue = tr.stimuli[..., 0].min(axis=1)
    for k in range(len(tr)):
        assert tr.correct[k] == tr.stimuli[k][tr.stimuli[k][:, 0] == best_cue[k], 1][0]
    choice = oracle_choice(tr.inputs)
    assert np.all(choice == tr.correct)
    r = reward(tr.stimuli, choice, np.random.default_rng(2).random(len(tr)), stochastic=False)
    np.testing.assert_array_equal(r, CUE_VALUES[best_cue])  # deterministic: always the best value


def test_rewards_penalty_and_stochastic_payment():
    stimuli = np.repeat(np.array([[[1, 0], [3, 2]]]), 4, axis=0)  # cue 1 (0.75) at pos 0, cue 3 (0.25) at 2
    choice = np.array([0, 2, 1, 0])
    u = np.array([0.5, 0.5, 0.0, 0.9])
    np.testing.assert_allclose(reward(stimuli, choice, u, stochastic=False), [0.75, 0.25, PENALTY, 0.75])
    np.testing.assert_allclose(reward(stimuli, choice, u, stochastic=True), [0.75, 0.0, PENALTY, 0.0])
