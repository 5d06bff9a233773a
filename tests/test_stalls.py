"""Stalls: a running run whose workload has gone silent past its threshold is STALLED in `orch status` (its own
column, a line with the time of its last sign of life, `--json`) and in the live table. The threshold: the spec's
`tracking.stall_after_s`, else 10x the run's usual gap between metrics lines, never under 5 minutes; the
system-metrics sampler's lines are not a sign of life."""

from __future__ import annotations

import json
from pathlib import Path

from support import submitting, wait_for

from orchestrator.follow import run_progress
from orchestrator.job import stall
from orchestrator.job.rundir import RunDir


def journal(tmp_path, lines: list[tuple[float, str]]):
    path = tmp_path / f"journal{len(list(tmp_path.iterdir()))}.jsonl"
    path.write_text(
        "".join(json.dumps({"t": t, "event": e, **({"step": 0} if e != "start" else {})}) + "\n" for t, e in lines)
    )
    return path


def test_the_threshold_follows_the_runs_logging_rate_and_never_goes_under_five_minutes(tmp_path):
    every_second = journal(tmp_path, [(0.0, "start"), *[(float(t), "metrics") for t in range(1, 30)]])
    assert stall.check(every_second, now=29 + 200) is None  # 200 s of silence: under the 5-minute floor
    found = stall.check(every_second, now=29 + 400)
    assert found is not None and found.threshold_s == 300 and found.silent_s == 400 and found.last_sign == 29
    hourly = journal(tmp_path, [(0.0, "start"), *[(3600.0 * k, "metrics") for k in range(1, 5)]])
    assert stall.check(hourly, now=4 * 3600 + 3000) is None  # 50 min: it logs once an hour
    assert stall.check(hourly, now=4 * 3600 + 10 * 3600 + 1) is not None
    assert stall.check(every_second, configured_s=5, now=29 + 6) is not None  # the spec's threshold wins


def test_sampler_lines_are_no_sign_of_life_and_an_ended_run_is_never_stalled(tmp_path):
    sampled = journal(tmp_path, [(0.0, "start"), (1.0, "metrics"), *[(10.0 * k, "system") for k in range(1, 2000)]])
    found = stall.check(sampled, configured_s=60, now=20000)
    assert found is not None and found.last_sign == 1.0  # found past a tail full of samples
    ended = journal(tmp_path, [(0.0, "start"), (1.0, "metrics"), (2.0, "end")])
    assert stall.check(ended, configured_s=1, now=1000) is None
    assert stall.check(tmp_path / "none.jsonl", configured_s=1) is None


def test_a_silent_run_is_stalled_in_status_and_in_the_live_table(store):
    spec = store.spec(
        {"name": "stuck", "workload": "smoke", "params": {"steps": 3, "sleep_s": 120}, "tracking": {"stall_after_s": 2}}
    )
    with submitting(store, spec):

        def stalled():
            result = store.orch("status", "stuck", "--json")
            groups = json.loads(result.output)["groups"] if result.exit_code == 0 else []
            return groups and groups[0]["stalled"]

        (found,) = wait_for(stalled, timeout=90, what="the run to be seen stalled")
        assert found["threshold_s"] == 2 and found["silent_s"] > 2 and found["seed"] == "0"
        text = " ".join(store.orch("status", "stuck").output.split())
        assert "stalled" in text and f"STALLED {found['run_id']}" in text and "no sign of life" in text
        (run,) = store.seed_runs("stuck")
        progress = run_progress("base/seed0", RunDir(Path(run.tags["orch.run_dir"])), {})
        assert progress.stall is not None and progress.step == 0  # the live table's row says STALLED
