"""The sweep's MLflow record, written from the driver process only (MLflow stays single-writer): one parent
run per sweep, one child per trial with its reported history, final status and early stops."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.spec.spec import flatten
from orchestrator.tracking.records import FAILED, FINISHED, KILLED, RUNNING, Role, Tag, chunks
from orchestrator.tune.lineage import PBT_KEY, SCHEDULE_FILE
from orchestrator.tune.section import FINAL_KEY, METRICS_KEY
from orchestrator.vocabulary import TrialStatus

# a PBT trial's exploitations (under orch.tune.*, the sweep's prefix): the latest donor trial and the step of
# its checkpoint this trial restarted from, how many times, and each of them in order
PBT_EXPLOITED_FROM, PBT_EXPLOITED_AT = "orch.tune.pbt.exploited_from", "orch.tune.pbt.exploited_at_step"
PBT_EXPLOITS, PBT_HISTORY = "orch.tune.pbt.exploits", "orch.tune.pbt.history"


@dataclass
class TrialState:
    """What the live trial table shows of one trial."""

    trial_id: str
    config: dict[str, Any]
    status: TrialStatus = TrialStatus.PENDING
    reports: int = 0
    step: int | None = None
    latest: dict[str, float] = field(default_factory=dict)
    started: float | None = None  # time.monotonic() of the first report's trial start
    exploits: int = 0  # PBT: exploitations recorded (tagged) so far


TrialSink = Callable[[list[TrialState], str], None]  # every trial's state, and the sweep's metric


class SweepRecorder:
    """A Tune callback (driver side): the sweep's parent run and one child run per trial. Picklable (Tune
    saves it with the experiment, for ``Tuner.restore``): the MLflow client is made on first use, and
    trial runs are found again by tag after a restore."""

    def __init__(
        self,
        uri: str,
        experiment_id: str,
        parent_id: str,
        sweep: str,
        metric: str,
        seeds: list[int],
        runs_root: str,
        flush_s: float = 2.0,
        mutated: tuple[str, ...] = (),
    ):
        self.uri, self.experiment_id, self.parent_id, self.sweep = uri, experiment_id, parent_id, sweep
        self.metric, self.seeds, self.runs_root, self.flush_s = metric, seeds, runs_root, flush_s
        self.mutated = mutated  # PBT: the params perturbations change, logged as pbt/<key> metrics
        self._ledger = None
        self._run_ids: dict[str, str] = {}
        self._buffer: dict[str, list] = defaultdict(list)
        self._flushed = time.monotonic()
        self.sink: TrialSink | None = None  # the live trial table (orch tune on a terminal); not pickled
        self.trials: dict[str, TrialState] = {}

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_ledger", "_run_ids", "_buffer", "sink", "trials")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._ledger, self._run_ids, self._buffer = None, {}, defaultdict(list)
        self.sink, self.trials = None, {}

    def _state(self, trial) -> TrialState:
        if trial.trial_id not in self.trials:
            self.trials[trial.trial_id] = TrialState(trial.trial_id, flatten(trial.config))
        return self.trials[trial.trial_id]

    def _show(self, trials) -> None:
        if self.sink is not None:
            for trial in trials:  # the queued ones too: the table lists the whole sweep
                self._state(trial)
            self.sink(list(self.trials.values()), self.metric)

    @property
    def ledger(self):
        if self._ledger is None:
            from orchestrator.tracking.ledger import Ledger

            self._ledger = Ledger(self.uri)
        return self._ledger

    def run_id(self, trial) -> str:
        if trial.trial_id in self._run_ids:
            return self._run_ids[trial.trial_id]
        found = self.ledger.client.search_runs(
            [self.experiment_id],
            max_results=1,
            filter_string=f"tags.`orch.tune.sweep` = '{self.sweep}' and tags.`orch.tune.trial_id` = '{trial.trial_id}'",
        )
        if found:
            run_id = found[0].info.run_id
        else:
            config = {k: v for k, v in flatten(trial.config).items()}
            tags = {
                Tag.ROLE: Role.TRIAL,
                Tag.SWEEP: self.sweep,
                Tag.TRIAL_ID: trial.trial_id,
                Tag.SEEDS: ",".join(map(str, self.seeds)),
                Tag.METRIC: self.metric,
                Tag.RUN_DIR: str(Path(self.runs_root) / trial.trial_id),
            }
            run_id = self.ledger.create_run(
                self.experiment_id,
                f"{self.sweep}/{trial.trial_id}",
                tags,
                {**config, "seeds_per_trial": len(self.seeds)},
                parent_id=self.parent_id,
                status=RUNNING,
            )
        self._run_ids[trial.trial_id] = run_id
        return run_id

    # Tune's Callback interface (duck-typed methods, subclassed below once Ray is imported)
    def on_trial_start(self, iteration, trials, trial, **info):
        self.ledger.set_status(self.run_id(trial), RUNNING)
        state = self._state(trial)
        state.status, state.started = TrialStatus.RUNNING, state.started or time.monotonic()
        self._show(trials)

    on_trial_restore = on_trial_start

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        step = int(result.get("step", result.get("training_iteration", 0)))
        for name, value in (result.get(METRICS_KEY) or {}).items():
            self._buffer[trial.trial_id].append(Metric(name, float(value), stamp, step))
        if result.get(FINAL_KEY):
            self._buffer[trial.trial_id].append(Metric("score", float(result[self.metric]), stamp, step))
        if self.mutated:
            self._pbt(trial, result, stamp, step)
        state = self._state(trial)
        state.reports, state.step = state.reports + 1, step
        state.latest.update({k: float(v) for k, v in (result.get(METRICS_KEY) or {}).items()})
        if self.metric in result:
            state.latest[self.metric] = float(result[self.metric])
        self._show(trials)
        if time.monotonic() - self._flushed > self.flush_s:
            self.flush()

    def _pbt(self, trial, result: dict, stamp: int, step: int) -> None:
        """A PBT trial's params over time (``pbt/<key>`` at each reported step: the values its state ran
        with) and its exploitations (tags: the latest donor and step, and every one of them in order)."""
        from mlflow.entities import Metric

        config = flatten(trial.config)
        for key in self.mutated:
            value = config.get(key)
            if isinstance(value, int | float) and not isinstance(value, bool):
                self._buffer[trial.trial_id].append(Metric(f"pbt/{key}", float(value), stamp, step))
        pbt = result.get(PBT_KEY) or {}
        state = self._state(trial)
        if int(pbt.get("exploits", 0)) > state.exploits:
            state.exploits = int(pbt["exploits"])
            tags = {PBT_EXPLOITED_FROM: pbt["from"], PBT_EXPLOITED_AT: pbt["at"], PBT_EXPLOITS: state.exploits}
            saved = Path(self.runs_root) / trial.trial_id / SCHEDULE_FILE  # every exploitation, in order
            if saved.exists():
                exploits = json.loads(saved.read_text())["exploits"]
                tags[PBT_HISTORY] = "; ".join(f"step {e['step']}: from {e['from']}" for e in exploits)[:5000]
            self.ledger.set_tags(self.run_id(trial), tags)

    def _schedule_artifact(self, trial, run_id: str) -> None:
        path = Path(self.runs_root) / trial.trial_id / SCHEDULE_FILE
        if self.mutated and path.exists():
            self.ledger.log_text(run_id, path.read_text(), SCHEDULE_FILE)

    def flush(self, trial_id: str | None = None) -> None:
        for tid in [trial_id] if trial_id else list(self._buffer):
            metrics = self._buffer.pop(tid, [])
            for chunk in chunks(metrics):
                self.ledger.client.log_batch(self._run_ids[tid], metrics=chunk)
        self._flushed = time.monotonic()

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        self.flush(trial.trial_id)
        last = trial.last_result or {}
        iterations = last.get("training_iteration", 0)
        self._state(trial).status = TrialStatus.FINISHED if last.get(FINAL_KEY) else TrialStatus.STOPPED
        self._show(trials)
        self._schedule_artifact(trial, run_id)
        if last.get(FINAL_KEY):
            self.ledger.set_status(run_id, FINISHED)
            self._say(trials, trial, f"finished: {self.metric} = {float(last[self.metric]):.6g}")
        else:  # completed without its final report: a scheduler (ASHA) stopped it
            self.ledger.set_tags(run_id, {Tag.EARLY_STOPPED: "true", Tag.STOPPED_AT_ITERATION: iterations})
            self.ledger.set_status(run_id, KILLED, f"stopped early by the scheduler after {iterations} reports")
            self._say(trials, trial, f"stopped early after {iterations} reports")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        self.flush(trial.trial_id)
        message = str(getattr(trial, "error_msg", None) or "trial failed")
        error_file = getattr(trial, "error_file", None)
        if error_file and Path(error_file).exists():
            message = Path(error_file).read_text()
        self.ledger.log_text(run_id, message, "traceback.txt")
        self._schedule_artifact(trial, run_id)
        lines = [line for line in message.strip().splitlines() if line.strip()]
        self.ledger.set_status(run_id, FAILED, lines[-1] if lines else "trial failed")
        self._state(trial).status = TrialStatus.FAILED
        self._show(trials)
        self._say(trials, trial, f"failed: {lines[-1] if lines else 'trial failed'}")

    def _say(self, trials, trial, what: str) -> None:
        """One line per ended trial, when no live table shows the sweep (output to a file or a pipe; Tune's
        own tables are off)."""
        if self.sink is not None:
            return
        ended = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR")) + 1
        config = ", ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in flatten(trial.config).items()
        )
        print(
            f"  trial {trial.trial_id} ({min(ended, len(trials))}/{len(trials)} ended) {what}  [{config}]", flush=True
        )


_CALLBACK_CLASS: type | None = None


def callback_class() -> type:
    """SweepRecorder as a ``ray.tune.Callback`` subclass, made on first use so that importing this module
    (to validate a spec) does not import Ray. Reachable as ``orchestrator.tune.recorder.SweepRecorderCallback``, so
    the pickled experiment state finds it again on ``Tuner.restore`` in a fresh process."""
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is None:
        from ray import tune

        _CALLBACK_CLASS = type("SweepRecorderCallback", (SweepRecorder, tune.Callback), {"__module__": __name__})
    return _CALLBACK_CLASS


def __getattr__(name: str):
    if name == "SweepRecorderCallback":
        return callback_class()
    raise AttributeError(name)
