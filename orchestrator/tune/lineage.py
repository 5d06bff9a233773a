"""A PBT trial's lineage, inside the trial: the schedule of params it ran (phases: from a step on, these
params), and the exploitations that made it. Kept in the trial's directory (``schedule.json``) and inside
every Tune checkpoint it attaches (``orch_trial.json``: whose checkpoint, at which step, the schedule so far),
so a trial that restarts from another's checkpoint knows whose it is and inherits the donor's schedule up to
that step: the winner's schedule is the whole path of params its state went through, which
``orch submit best.yaml`` replays (``spec/schedule.py``, ``job/phases.py``)."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.job.journal import JournalWriter, last_event
from orchestrator.job.rundir import RunDir, atomic_write
from orchestrator.spec import registry
from orchestrator.spec.spec import deep_merge, nest
from orchestrator.vocabulary import Event

SCHEDULE_FILE = "schedule.json"  # in <runs_root>/<trial_id>/
META_FILE = "orch_trial.json"  # in a Tune checkpoint of a PBT trial
PBT_KEY = "orch_pbt"  # in each report: the trial's phase and its exploitations, for the recorder


@dataclass
class Lineage:
    trial_id: str
    schedule: list[dict[str, Any]]  # [{"step": first step, "params": {dotted: value}, "trial": whose phase}]
    exploits: list[dict[str, Any]] = field(default_factory=list)  # [{"from": donor, "step": its checkpoint}]

    @classmethod
    def load(cls, trial_dir: Path, trial_id: str, config: dict[str, Any]) -> Lineage:
        path = trial_dir / SCHEDULE_FILE
        if path.exists():
            return cls(**json.loads(path.read_text()))
        return cls(trial_id, [{"step": 0, "params": dict(config), "trial": trial_id}])

    def save(self, trial_dir: Path) -> None:
        atomic_write(trial_dir / SCHEDULE_FILE, json.dumps(asdict(self), indent=1).encode(), durable=False)

    def summary(self) -> dict[str, Any]:
        """What each report tells the recorder (driver side): scalars, which Tune's own result loggers take."""
        last = self.exploits[-1] if self.exploits else {"from": "", "step": -1}
        return {"phases": len(self.schedule), "exploits": len(self.exploits), "from": last["from"], "at": last["step"]}


def meta(trial_id: str, step: int, lineage: Lineage) -> dict[str, Any]:
    return {"trial_id": trial_id, "step": step, "schedule": lineage.schedule}


def adopt(workload: str, trial_id: str, config: dict[str, Any], run_dir: RunDir, checkpoint) -> tuple[Lineage, int]:
    """Before the worker starts: when Tune hands this trial another trial's checkpoint (PBT exploited it),
    that checkpoint becomes this run directory's, run.json takes the mutated params, and the lineage the
    donor's schedule plus the new phase. Returns the lineage and the step of the last perturbation (PBT's
    clock: the checkpoint Tune restored, 0 without one)."""
    trial_dir = run_dir.path.parent
    lineage = Lineage.load(trial_dir, trial_id, config)
    if not (trial_dir / SCHEDULE_FILE).exists():
        lineage.save(trial_dir)
    if checkpoint is None:
        return lineage, 0
    with checkpoint.as_directory() as folder:
        saved = json.loads((Path(folder) / META_FILE).read_text())
        pickle = next(Path(folder).glob("seed*.pkl"))
        donor, step = saved["trial_id"], int(saved["step"])
        # its own checkpoint (a pause, a resumed sweep), or the donor's again: paused before it checkpointed
        # anything of its own, the exploited trial restarts from the checkpoint it already adopted
        again = bool(lineage.exploits) and (lineage.exploits[-1]["from"], lineage.exploits[-1]["step"]) == (donor, step)
        if donor == trial_id or again:
            if not run_dir.checkpoint.exists():  # a run directory's own is never older (a resumed sweep)
                shutil.copy2(pickle, run_dir.checkpoint)
            return lineage, step + 1
        shutil.copy2(pickle, run_dir.checkpoint)
    lineage = Lineage(
        trial_id,
        [*saved["schedule"], {"step": step + 1, "params": dict(config), "trial": trial_id}],
        [*lineage.exploits, {"from": donor, "step": step, "t": time.time()}],
    )
    lineage.save(trial_dir)
    job = run_dir.load()
    model = registry.get(workload, probe=False).params_model
    params = model.model_validate(deep_merge(job.run["params"], nest(config))).model_dump(mode="json")
    run_dir.create(job.model_copy(update={"run": {**job.run, "params": params}}))
    journal = JournalWriter(run_dir.journal)
    try:
        journal.write(Event.PHASE, step=step + 1, phase=len(lineage.schedule) - 1, params=config, from_trial=donor)
        # the checkpoint in place now is the donor's: the next start resumes from its step
        journal.write(Event.CHECKPOINT, step=step, from_trial=donor)
    finally:
        journal.close()
    return lineage, step + 1


def checkpoint_step(run_dir: RunDir) -> int | None:
    """The journaled step of the run directory's checkpoint (None: none yet)."""
    if not run_dir.checkpoint.exists():
        return None
    return (last_event(run_dir.journal, Event.CHECKPOINT) or {}).get("step")
