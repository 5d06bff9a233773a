"""What Slurm says, in orch's terms: its job states (squeue %T / sacct State) as JobStates, its compressed job
ids expanded, and ``scheduler.json``, each run directory's record of its submission (token, job id,
submitter) that lets a crashed orchestrator find its jobs again."""

from __future__ import annotations

import json
import re
from typing import Any

from orchestrator.backends.base import DONE, PENDING, RUNNING, JobState
from orchestrator.job.rundir import RunDir, atomic_write

# Slurm job states (squeue %T / sacct State) -> orch's view of a job
PENDING_STATES = {
    "PENDING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "CONFIGURING",
    "RESV_DEL_HOLD",
    "SPECIAL_EXIT",
    "RESIZING",
}
RUNNING_STATES = {"RUNNING", "COMPLETING", "STAGE_OUT", "SIGNALING", "SUSPENDED", "STOPPED"}
ENDED_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "BOOT_FAIL",
    "DEADLINE",
    "REVOKED",
}


# -- scheduler.json: the run directory's record of its submission ------------------------------------
def read_record(run_dir: RunDir) -> dict[str, Any]:
    try:
        return json.loads(run_dir.scheduler_record.read_text())
    except (OSError, ValueError):
        return {}


def write_record(run_dir: RunDir, record: dict[str, Any]) -> None:
    atomic_write(run_dir.scheduler_record, json.dumps(record).encode(), durable=False)


# -- parsing scheduler output ------------------------------------------------------------------------
def expand_job_ids(field: str) -> list[str]:
    """``12_3`` -> [12_3]; ``12_[0-2,5%4]`` (pending array tasks, compressed) -> [12_0, 12_1, 12_2, 12_5]."""
    match = re.fullmatch(r"(\d+)_\[([^\]]+)\]", field)
    if not match:
        return [field]
    base, spec = match.group(1), match.group(2).split("%")[0]
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def to_job_state(state: str, detail: str) -> JobState:
    """``state`` as Slurm prints it (sacct: "CANCELLED by 1000"), ``detail`` the exit code or reason."""
    name = state.split()[0] if state else ""
    detail = "" if detail in ("None", "0:0") else detail
    if name in PENDING_STATES:
        return JobState(PENDING, detail or None)
    if name in RUNNING_STATES:
        return JobState(RUNNING)
    if name == "COMPLETED" and not detail:
        return JobState(DONE)  # the journal says how the run ended
    return JobState(DONE, f"Slurm: {state}" + (f" ({detail})" if detail else ""))


# -- sacct's accounting of ended jobs ------------------------------------------------------------------
_RSS_UNITS = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}


def rss_mb(value: str) -> float:
    """sacct's MaxRSS (``1234K``, ``56M``, ``1.5G``, or bytes) in MiB; 0 when empty."""
    value = value.strip()
    if not value:
        return 0.0
    unit = _RSS_UNITS.get(value[-1].upper())
    return float(value[:-1]) * unit if unit is not None else float(value) / 2**20


def parse_accounting(text: str, wanted: set[str]) -> dict[str, dict[str, str]]:
    """``sacct -n -P -o JobID,Elapsed,State,ExitCode,NodeList,AllocTRES,MaxRSS`` lines -> job id -> fields, for
    the ``wanted`` jobs that ended: the job line's fields, and the largest MaxRSS among its steps
    (``123_4.batch``, ``123_4.extern``, ``123_4.0``)."""
    jobs: dict[str, dict[str, str]] = {}
    peaks: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != 7:
            continue
        job_field, elapsed, state, exit_code, nodes, tres, max_rss = parts
        job_id, _, step = job_field.partition(".")
        if job_id not in wanted:
            continue
        if step:
            peaks[job_id] = max(peaks.get(job_id, 0.0), rss_mb(max_rss))
        elif state.split()[0] in ENDED_STATES if state else False:
            jobs[job_id] = {
                "elapsed": elapsed,
                "state": state,
                "exit_code": exit_code,
                "nodes": nodes,
                "alloc_tres": tres,
            }
    for job_id, fields in jobs.items():
        fields["max_rss_mb"] = f"{peaks.get(job_id, 0.0):.1f}"
    return jobs
