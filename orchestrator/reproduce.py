"""``orch reproduce RUN_ID``: run a recorded run again, from the code snapshot and resolved params its
job ran, in a scratch run directory (nothing recorded in MLflow), and say whether every metric it logs
and returns is identical to the record's."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError
from orchestrator.job import snapshot
from orchestrator.job.journal import decode_number, events
from orchestrator.job.rundir import RunDir
from orchestrator.tracking.records import RunRecord, Tag
from orchestrator.vocabulary import Event, RunStatus


@dataclass
class Reproduction:
    record: RunRecord
    status: str  # the re-run's end status
    compared: int  # metric values compared (every step, every name, finals)
    differences: list[str] = field(default_factory=list)  # the first few, as "step 3 loss: 0.2 != 0.21"
    code: str = ""  # the snapshot digest the re-run used ("" = live code)

    @property
    def identical(self) -> bool:
        return not self.differences and self.compared > 0


def logged(journal: Path) -> tuple[dict[tuple[int, str], float], dict[str, float], str | None]:
    """Per (step, metric) the first value journaled (a resumed attempt's replayed steps are the same
    rows, as ingestion counts them), the final metrics and the end status."""
    values: dict[tuple[int, str], float] = {}
    for record in events(journal, Event.METRICS):
        for name, value in record["metrics"].items():
            values.setdefault((record["step"], name), decode_number(value))
    ends = events(journal, Event.END)
    final = {k: decode_number(v) for k, v in (ends[-1].get("final") or {}).items()} if ends else {}
    return values, final, ends[-1]["status"] if ends else None


def reproduce(record: RunRecord, timeout_s: float | None = None) -> Reproduction:
    run_dir = RunDir(Path(record.tags.get(Tag.RUN_DIR, "")))
    if not run_dir.spec_file.is_file():
        raise InputError(
            f"run {record.run_id}: its run directory {run_dir.path} (run.json) is gone: nothing to reproduce from"
        )
    job = run_dir.load()
    gone = snapshot.missing(job.code)
    if gone:
        raise InputError(f"run {record.run_id}: {gone}")
    original, original_final, _ = logged(run_dir.journal)
    with tempfile.TemporaryDirectory(prefix="orch-reproduce-") as tmp:
        scratch = RunDir(Path(tmp) / "run")
        # no tracking URI and no run id: the re-run must not push into the recorded run
        scratch.create({**job.model_dump(), "tracking_uri": "", "run_id": "", "reproduces": record.run_id})
        subprocess.run(
            [sys.executable, "-m", "orchestrator.job.worker", str(scratch.path)],
            timeout=timeout_s,
            cwd=job.submit_dir or None,
            check=False,
        )
        again, again_final, status = logged(scratch.journal)
        ends = events(scratch.journal, Event.END)
        error = ends[-1].get("error") if ends else "the re-run wrote no end"
    result = Reproduction(record, status or RunStatus.FAILED, 0, code=(job.code or {}).get("digest", ""))
    if status != RunStatus.FINISHED:
        result.differences.append(f"the re-run ended {status}: {error}")
    for key in sorted(set(original) | set(again)):
        result.compared += 1
        a, b = original.get(key), again.get(key)
        if a != b and not (a is not None and b is not None and a != a and b != b):  # NaN == NaN here
            result.differences.append(f"step {key[0]} {key[1]}: {a} != {b}")
    for name in sorted(set(original_final) | set(again_final)):
        result.compared += 1
        if original_final.get(name) != again_final.get(name):
            result.differences.append(f"final {name}: {original_final.get(name)} != {again_final.get(name)}")
    return result


def to_dict(result: Reproduction) -> dict[str, Any]:
    return {
        "run_id": result.record.run_id,
        "identical": result.identical,
        "status": result.status,
        "compared": result.compared,
        "differences": result.differences,
        "code": result.code,
    }
