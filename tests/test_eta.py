"""The time a submission has left when its runs differ in length (orchestrator/eta.py): each run timed by its
own group's finished runs, laid onto the slots the submission gets; and what the progress bar shows."""

from __future__ import annotations

import pytest

from orchestrator.eta import Eta
from orchestrator.render import ProgressBar, clock


def test_short_runs_finishing_first_do_not_promise_seconds_for_the_long_ones():
    """The issue's case: 2 slots, short seeds (1 s) done, long seeds (15 min) running: a rate of runs per second
    would say seconds; nothing is known of the long group yet, so no number."""
    eta = Eta()
    eta.running({"s0": "short", "s1": "short"}, now=0.0)
    eta.ended("s0", True, now=1.0)
    eta.ended("s1", True, now=1.0)
    eta.running({"l0": "long", "l1": "long"}, now=1.0)
    assert eta.seconds(["l0", "l1"], ["long", "long"], now=30.0) is None
    # one long seed finished after 900 s: l1 is due now, l2 (just started) in 899 s, and the queued one takes
    # l1's slot: 900 s from now
    eta.ended("l0", True, now=901.0)
    eta.running({"l1": "long", "l2": "long"}, now=901.0)
    assert eta.seconds(["l1", "l2"], ["long"], now=902.0) == pytest.approx(900.0)
    assert eta.seconds(["l1", "l2"], ["long", "long"], now=902.0) == pytest.approx(899.0 + 900.0)


def test_queued_runs_go_to_the_earliest_free_slot():
    eta = Eta(durations={"a": [10.0, 12.0, 14.0], "b": [100.0]}, slots=2)
    eta.running({"r1": "a", "r2": "b"}, now=0.0)
    # r1 frees its slot at 12 (median of a), r2 at 100; queued a, a: 12 -> 24 -> 36 on the first slot
    assert eta.seconds(["r1", "r2"], ["a", "a"], now=0.0) == pytest.approx(100.0)
    # ten more: eight on the first slot (to 108), one on the second at 100 (to 112), the last at 108 (to 120)
    assert eta.seconds(["r1", "r2"], ["a"] * 10, now=0.0) == pytest.approx(120.0)
    assert eta.seconds([], [], now=0.0) == 0.0
    assert eta.seconds(["r1"], ["c"], now=0.0) is None  # a group never finished yet


def test_failed_and_killed_runs_do_not_time_their_group():
    eta = Eta()
    eta.running({"x": "g"}, now=0.0)
    eta.ended("x", False, now=0.5)  # crashed at once: says nothing of how long g takes
    assert eta.typical("g") is None
    eta.ended("never-seen", True, now=1.0)  # ended before it was ever seen running: no length to take
    assert eta.durations == {}


def test_the_bar_shows_the_estimate_or_a_dash():
    bar = ProgressBar(4)
    bar.update(1, 2, 0, 0, 4, [], eta_s=None)
    assert bar.progress.tasks[0].fields["eta"] == "-"
    bar.update(1, 2, 0, 0, 4, [], eta_s=3725.4)
    assert bar.progress.tasks[0].fields["eta"] == "1:02:05"
    assert clock(90061) == "25:01:01"
