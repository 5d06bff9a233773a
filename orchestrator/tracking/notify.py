"""Telling the lab what it is not watching: a run that failed, a run that stalled, a submission whose runs all
ended. The spec's ``notify:`` section says where (a webhook URL, JSON POSTed; a command, argv never through a
shell, the same JSON on its stdin) and on which events. It travels in each run.json, so whichever orch process
meets the event sends it: the orchestrator following its runs, ``orch status``, ``orch sync``.

Exactly once per event, whoever meets it first: a marker file in the run directory (the submission's folder for
``end``) is created with O_EXCL before sending, and removed again when the sending failed, so that the next
process that meets the event tries again. An event is a run's attempt failing, a run's attempt stalling, or
every run of one submission having ended."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from orchestrator.console import err_console
from orchestrator.job.journal import events, last_event
from orchestrator.job.rundir import RunDir
from orchestrator.job.runjson import RunJob
from orchestrator.vocabulary import Event

EVENTS = ("failure", "stall", "end")
TIMEOUT_S = 10.0
END_PENDING = ".notify-end.json"  # in the submission's folder (the run directories' parent)


def _claim(marker: Path) -> bool:
    """True for the one process that creates ``marker`` first."""
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return False
    except OSError:  # a read-only or vanished run directory: nobody can claim it
        return False
    return True


def deliver(config: dict[str, Any], payload: dict[str, Any]) -> bool:
    """POST ``payload`` to the webhook and/or give it to the command; True when every target took it."""
    body = json.dumps(payload, default=str).encode()
    ok = True
    if config.get("webhook"):
        request = urllib.request.Request(
            config["webhook"],
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "orch"},
        )
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                ok = ok and 200 <= response.status < 300
        except (urllib.error.URLError, OSError, ValueError) as err:
            err_console.print(
                f"[yellow]orch: the {payload['event']} notification did not reach its webhook "
                f"({getattr(err, 'reason', err)}); the next orch command tries again[/]"
            )
            ok = False
    if config.get("command"):
        try:
            done = subprocess.run(
                config["command"],
                input=body,
                capture_output=True,
                timeout=TIMEOUT_S * 3,
                env={**os.environ, "ORCH_EVENT": payload["event"]},
            )
            ok = ok and done.returncode == 0
        except (OSError, subprocess.SubprocessError) as err:
            err_console.print(
                f"[yellow]orch: the notification command failed ({err}); the next orch command tries again[/]"
            )
            ok = False
    return ok


def _send_once(marker: Path, config: dict[str, Any], payload: dict[str, Any]) -> bool:
    if not _claim(marker):
        return False
    if deliver(config, payload):
        return True
    marker.unlink(missing_ok=True)  # not delivered: the next process that meets the event tries again
    return False


def _config(job: RunJob, event: str) -> dict[str, Any] | None:
    config = job.notify
    return config if config and event in config.get("on", EVENTS) else None


def _run_payload(event: str, job: RunJob, run_dir: RunDir, **fields: Any) -> dict[str, Any]:
    run, uri = job.run, job.tracking_uri
    link = None
    if uri.startswith(("http://", "https://")) and job.experiment_id:
        link = f"{uri.rstrip('/')}/#/experiments/{job.experiment_id}/runs/{job.run_id}"
    return {
        "event": event,
        "experiment": job.experiment,
        "run": job.run_id,
        "group": run.get("variant"),
        "seed": run.get("seed"),
        "run_dir": str(run_dir.path),
        "link": link,
        **fields,
    }


def run_ended(run_dir: RunDir) -> bool:
    """A run's attempt ended (its journal's last ``end``): notify a failure, once per attempt. True when a
    notification went out."""
    try:
        job = run_dir.load()
    except (OSError, ValueError):
        return False
    config = _config(job, "failure")
    end = last_event(run_dir.journal, Event.END) if config else None
    if config is None or end is None or end.get("status") != "FAILED":
        return False
    status, error, attempt = end["status"], end.get("error"), len(events(run_dir.journal, Event.START))
    payload = _run_payload("failure", job, run_dir, status=status, error=error, attempt=attempt)
    return _send_once(run_dir.path / f".notified-failure-{attempt}", config, payload)


def run_stalled(run_dir: RunDir, stall: dict[str, float], attempt: int) -> bool:
    """A run's attempt stalled: notify it (once per attempt)."""
    try:
        job = run_dir.load()
    except (OSError, ValueError):
        return False
    config = _config(job, "stall")
    if config is None:
        return False
    payload = _run_payload("stall", job, run_dir, status="STALLED", error=None, attempt=attempt, **stall)
    return _send_once(run_dir.path / f".notified-stall-{attempt}", config, payload)


def expect_end(folder: Path, config: dict[str, Any] | None, experiment: str, run_ids: list[str]) -> None:
    """At submit: the submission's end is to be notified once all of ``run_ids`` ended (a later submission
    adds its runs: the end is the end of all of them)."""
    if not config or "end" not in config.get("on", EVENTS):
        return
    path = folder / END_PENDING
    pending = {"config": config, "experiment": experiment, "run_ids": []}
    with contextlib.suppress(OSError, ValueError):
        pending = json.loads(path.read_text())
    pending["config"] = config
    pending["run_ids"] = sorted(set(pending["run_ids"]) | set(run_ids))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(pending))
    os.replace(tmp, path)


def maybe_end(folder: Path, statuses: dict[str, str]) -> bool:
    """When every run a pending end waits for has ended (``statuses``: run id -> status), send the end once:
    the process that renames the pending file away is the one that sends it."""
    path = folder / END_PENDING
    try:
        pending = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    waited = pending.get("run_ids", [])
    if not waited or any(statuses.get(r) not in ("FINISHED", "FAILED", "KILLED") for r in waited):
        return False
    claimed = path.with_name(f"{END_PENDING}.{os.getpid()}")
    try:
        os.rename(path, claimed)  # atomic: one process wins
    except OSError:
        return False
    counts = {s: sum(1 for r in waited if statuses.get(r) == s) for s in ("FINISHED", "FAILED", "KILLED")}
    summary = (
        f"{pending.get('experiment', '')}: {len(waited)} runs ended: {counts['FINISHED']} finished, "
        f"{counts['FAILED']} failed, {counts['KILLED']} killed"
    )
    payload = {
        "event": "end",
        "experiment": pending.get("experiment", ""),
        "summary": summary,
        **counts,
        "runs": len(waited),
    }
    if deliver(pending["config"], payload):
        claimed.unlink(missing_ok=True)
        return True
    os.replace(claimed, path)  # not delivered: pending again, for the next process
    return False
