"""The time a submission has left, for runs of mixed lengths.

A rate of runs done per second (what a progress bar's usual eta divides by) is wrong as soon as the runs
differ: the short variant's seeds finish first and the bar promises seconds while the long ones need
minutes. Seeds of one group run the same configuration and last about as long, so each run is timed by
the finished runs of its own group; the runs still to come are then laid onto the parallel slots the
submission has shown it gets (greedy, earliest free slot first). While a running or queued group has no
finished run yet there is nothing honest to say, and the estimate is None."""

from __future__ import annotations

import heapq
import statistics
from dataclasses import dataclass, field


@dataclass
class Eta:
    started: dict[str, tuple[str, float]] = field(default_factory=dict)  # run id -> (group, first seen running)
    durations: dict[str, list[float]] = field(default_factory=dict)  # group -> its finished runs' lengths
    slots: int = 1  # the most runs seen running at once

    def running(self, run_ids: dict[str, str], now: float) -> None:
        """``run_ids``: the runs running now, with their group."""
        for run_id, group in run_ids.items():
            self.started.setdefault(run_id, (group, now))
        self.slots = max(self.slots, len(run_ids))

    def ended(self, run_id: str, finished: bool, now: float) -> None:
        """A failed or killed run says nothing of how long its group takes: only finished ones count."""
        seen = self.started.pop(run_id, None)
        if seen is not None and finished:
            self.durations.setdefault(seen[0], []).append(now - seen[1])

    def typical(self, group: str) -> float | None:
        lengths = self.durations.get(group)
        return statistics.median(lengths) if lengths else None

    def seconds(self, running: list[str], queued: list[str], now: float) -> float | None:
        """Seconds until the last run ends: ``running`` run ids (seen by ``running()``), ``queued`` the groups
        of the runs not started yet, in the order they will start."""
        free_at = []
        for run_id in running:
            group, since = self.started[run_id]
            length = self.typical(group)
            if length is None:
                return None
            free_at.append(max(length - (now - since), 0.0))  # past its group's length: any moment now
        lengths = [self.typical(group) for group in queued]
        if any(length is None for length in lengths):
            return None
        free_at += [0.0] * max(self.slots - len(free_at), 0)
        heapq.heapify(free_at)
        end = max(free_at, default=0.0)
        for length in lengths:
            assert length is not None
            start = heapq.heappop(free_at) if free_at else end
            heapq.heappush(free_at, start + length)
            end = max(end, start + length)
        return end
