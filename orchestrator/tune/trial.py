"""What runs inside a Ray trial: the ordinary worker on each of the trial's seeds, a seed-mean report to
Tune per logged step (so ASHA can stop bad trials early), and the mean final metric as the trial's score."""

from __future__ import annotations

import contextlib
import json
import shutil
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.job.journal import FINISHED, decode_number, last_event, read_journal
from orchestrator.job.rundir import RunDir
from orchestrator.spec import registry
from orchestrator.spec.plan import Run
from orchestrator.spec.spec import deep_merge, nest
from orchestrator.tune import lineage as lineages
from orchestrator.tune.section import FINAL_KEY, METRICS_KEY, TIME_KEY
from orchestrator.vocabulary import Event


@dataclass(frozen=True)
class TrialPlan:
    """Everything a trial needs, picklable (it travels to Ray workers)."""

    workload: str
    params: dict[str, Any]  # the spec's params, nested (the sampled ones are merged on top)
    seeds: tuple[int, ...]
    cpus: int
    gpus: float  # fractions share a GPU (Ray)
    runs_root: str  # run directories: <runs_root>/<trial_id>/seed<seed>
    metric: str
    report: str
    checkpoint_every_s: float = 10.0
    pbt: dict[str, int] | None = None  # PBT: {"interval": steps, "burn_in": steps} (tune/pbt.py)


class StepMeans:
    """Per-step means over the seeds of a trial, emitted in step order once every seed logged the step.
    A workload may log a step more than once (train metrics, then eval metrics at the same step): the new
    keys are emitted again for that step. A resumed seed replays steps already emitted: nothing new."""

    def __init__(self, seeds: int):
        self.seeds = seeds
        self.logged: dict[int, list[dict[str, float]]] = defaultdict(lambda: [{} for _ in range(seeds)])
        self.emitted: dict[int, set[str]] = defaultdict(set)
        self.last = -1  # the last step emitted
        self.reached = [-1] * seeds

    def add(self, seed_index: int, step: int, metrics: dict[str, float]) -> list[tuple[int, dict[str, float]]]:
        self.logged[step][seed_index].update(metrics)
        self.reached[seed_index] = max(self.reached[seed_index], step)
        out = []
        for s in sorted(k for k in self.logged if k <= min(self.reached)):
            keys = set.intersection(*(set(m) for m in self.logged[s]))
            if keys - self.emitted[s]:
                self.emitted[s] |= keys
                out.append((s, {k: statistics.fmean(m[k] for m in self.logged[s]) for k in sorted(keys)}))
                self.last = max(self.last, s)
        for s in [k for k in self.logged if k < min(self.reached)]:
            del self.logged[s]  # every seed moved past it: only a replay could log it again
        return out


class _Reporter:
    """Turns seed-mean steps into ``tune.report`` calls, attaching the seeds' checkpoints when they changed
    (Tune's checkpointing: restore after a crash, or on another node, starts from them)."""

    def __init__(self, plan: TrialPlan, run_dirs: list[RunDir]):
        from ray import tune

        self.tune, self.plan, self.run_dirs = tune, plan, run_dirs
        self.means = StepMeans(len(run_dirs))
        self.saved: dict[str, float] = {}
        self.last_checkpoint = time.monotonic()
        self.stopped = False  # Tune stopped the trial in a report

    def add(self, seed_index: int, step: int, metrics: dict[str, float]) -> None:
        for s, means in self.means.add(seed_index, step, metrics):
            result = {"step": s, FINAL_KEY: 0, METRICS_KEY: means}
            if self.plan.report in means:
                result[self.plan.metric] = means[self.plan.report]
            self._report(result, self._checkpoint())

    def _report(self, result: dict[str, Any], checkpoint) -> None:
        try:
            self.tune.report(result, checkpoint=checkpoint)
        except SystemExit:  # Tune stops or pauses the trial (ASHA, PBT): the run is KILLED, not FAILED
            from orchestrator.job.worker import Terminated

            self.stopped = True
            raise Terminated("stopped by the scheduler") from None
        finally:
            if checkpoint is not None:  # report() copied it into the sweep's storage
                shutil.rmtree(checkpoint.path, ignore_errors=True)

    def _checkpoint(self, force: bool = False):
        # Throttled: the run directories hold every checkpoint already; Tune's copy (for a restore on
        # another node) is refreshed at most every checkpoint_every_s, or Tune's state syncing becomes the bottleneck.
        if not force and time.monotonic() - self.last_checkpoint < self.plan.checkpoint_every_s:
            return None
        stamps = {str(r.checkpoint): r.checkpoint.stat().st_mtime for r in self.run_dirs if r.checkpoint.exists()}
        if not stamps or stamps == self.saved:
            return None
        self.saved = stamps
        self.last_checkpoint = time.monotonic()
        folder = self.run_dirs[0].path.parent / "tune_checkpoint"  # in the trial's directory: never left in /tmp
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for seed, run_dir in zip(self.plan.seeds, self.run_dirs, strict=False):
            if run_dir.checkpoint.exists():
                shutil.copy2(run_dir.checkpoint, folder / f"seed{seed}.pkl")
        self._describe(folder)
        from ray.tune import Checkpoint

        return Checkpoint.from_directory(str(folder))

    def _describe(self, folder: Path) -> None:
        """What a checkpoint says of itself (PBT: whose and at which step)."""

    def final(self, finals: list[dict[str, float]]) -> None:
        keys = set.intersection(*(set(f) for f in finals))
        if self.plan.metric not in keys:
            raise RuntimeError(
                f"tune.metric '{self.plan.metric}' is not among the workload's final metrics "
                f"({', '.join(sorted(keys))})"
            )
        means = {k: statistics.fmean(decode_number(f[k]) for f in finals) for k in sorted(keys)}
        self._report(
            {
                "step": self.means.last + 1,
                FINAL_KEY: 1,
                METRICS_KEY: means,
                self.plan.metric: means[self.plan.metric],
                **self._extra(),
            },
            None,
        )

    def _extra(self) -> dict[str, Any]:
        return {}


class PbtReporter(_Reporter):
    """PBT's reports (tune/pbt.py). A step is reported once the workload has moved past it (its next log,
    or its end), so the report knows whether the step was checkpointed; it carries PBT's clock (``TIME_KEY``:
    steps done at the latest checkpoint) and, when PBT will look at it (the clock moved ``interval`` steps
    since the last perturbation), the checkpoint itself, described (``lineage.META_FILE``): a perturbation
    therefore always finds the checkpoint of the step it judged."""

    def __init__(self, plan: TrialPlan, run_dirs: list[RunDir], lineage: lineages.Lineage, perturbed_at: int):
        super().__init__(plan, run_dirs)
        assert plan.pbt is not None
        self.interval, self.burn_in = plan.pbt["interval"], plan.pbt["burn_in"]
        self.lineage, self.perturbed_at = lineage, perturbed_at
        self.pending: tuple[int, dict[str, float]] | None = None
        self.offset = 0
        self.checkpointed: int | None = None  # the journaled step of the latest checkpoint
        self._read_journal()
        self.attached = self.reported = self.clock()

    def _read_journal(self) -> None:
        records, self.offset = read_journal(self.run_dirs[0].journal, self.offset)
        for record in records:
            if record["event"] == Event.CHECKPOINT and record.get("step") is not None:
                self.checkpointed = int(record["step"])

    def clock(self) -> int:
        return 0 if self.checkpointed is None else self.checkpointed + 1

    def add(self, seed_index: int, step: int, metrics: dict[str, float]) -> None:
        for s, means in self.means.add(seed_index, step, metrics):
            if self.pending is not None and self.pending[0] != s:
                self._flush()
            self.pending = (s, means)

    def _flush(self, last: bool = False) -> None:
        assert self.pending is not None
        (step, means), self.pending = self.pending, None
        self._read_journal()
        checkpoint = None
        if not last:  # the run's last step: its clock stays, so PBT does not perturb a trial that has ended
            self.reported = self.clock()
            now = self.reported
            # PBT's own test (schedulers/pbt.py: on_trial_result), on the same clock: it perturbs on this report
            # (one that has the metric it compares)
            due = now != self.attached and now >= self.burn_in and now - self.perturbed_at >= self.interval
            if due and self.plan.report in means:
                checkpoint = self._checkpoint(force=True)
                self.perturbed_at = self.attached = now
        result = {"step": step, FINAL_KEY: 0, METRICS_KEY: means, **self._extra()}
        if self.plan.report in means:
            result[self.plan.metric] = means[self.plan.report]
        self._report(result, checkpoint)

    def _describe(self, folder: Path) -> None:
        from orchestrator.job.rundir import atomic_write

        assert self.checkpointed is not None  # attached only once the clock moved: a checkpoint exists
        meta = lineages.meta(self.lineage.trial_id, self.checkpointed, self.lineage)
        atomic_write(folder / lineages.META_FILE, json.dumps(meta).encode(), durable=False)

    def _extra(self) -> dict[str, Any]:
        return {TIME_KEY: self.reported, lineages.PBT_KEY: self.lineage.summary()}

    def final(self, finals: list[dict[str, float]]) -> None:
        if self.pending is not None:
            self._flush(last=True)
        super().final(finals)


def _restore_checkpoints(plan: TrialPlan, run_dirs: list[RunDir]) -> None:
    from ray import tune

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        for seed, run_dir in zip(plan.seeds, run_dirs, strict=False):
            saved = Path(folder) / f"seed{seed}.pkl"
            if saved.exists() and not run_dir.checkpoint.exists():  # a run directory's own is never older
                shutil.copy2(saved, run_dir.checkpoint)


def trial_run_dirs(plan: TrialPlan, trial_id: str, config: dict[str, Any]) -> list[RunDir]:
    model = registry.get(plan.workload, probe=False).params_model  # probed when the sweep started
    params = model.model_validate(deep_merge(plan.params, nest(config))).model_dump(mode="json")
    run_dirs = []
    for i, seed in enumerate(plan.seeds):
        run_dir = RunDir(Path(plan.runs_root) / trial_id / f"seed{seed}")
        if not run_dir.spec_file.exists():
            run = Run(plan.workload, params, seed, "tune", dict(config), i)
            run_dir.create(
                {
                    "run": run.to_dict(),
                    "run_id": "",  # a trial's seed has no MLflow run of its own: the trial's records it
                    "experiment_id": "",
                    "trial_id": trial_id,
                    "cpus": plan.cpus,
                    "gpus": plan.gpus,
                }
            )
        run_dirs.append(run_dir)
    return run_dirs


def trainable(config: dict[str, Any], plan: TrialPlan) -> None:
    """One trial: the worker on each seed; a seed-mean report per logged step, then the final score."""
    from ray import tune

    trial_id = tune.get_context().get_trial_id()
    run_dirs = trial_run_dirs(plan, trial_id, config)
    reporter: _Reporter
    if plan.pbt is None:
        _restore_checkpoints(plan, run_dirs)
        reporter = _Reporter(plan, run_dirs)
    else:  # another trial's checkpoint, when PBT exploited this one: adopted with the mutated params
        lineage, perturbed_at = lineages.adopt(plan.workload, trial_id, config, run_dirs[0], tune.get_checkpoint())
        reporter = PbtReporter(plan, run_dirs, lineage, perturbed_at)
    if len(run_dirs) == 1:
        from orchestrator.job import worker
        from orchestrator.job.rundir import output_to

        with output_to(run_dirs[0]):
            worker.execute(run_dirs[0].path, extra_callbacks=[lambda step, m: reporter.add(0, step, m)])
    else:
        from orchestrator.job.worker import Terminated

        with contextlib.suppress(Terminated):  # the scheduler stopped the trial (reporter.stopped)
            _run_seeds_as_tasks(run_dirs, reporter)
    if reporter.stopped:
        raise SystemExit(0)  # as tune.report does for a stopped trial: its thread ends, no error
    ends = [last_event(r.journal, Event.END) for r in run_dirs]
    failed = [(seed, e) for seed, e in zip(plan.seeds, ends, strict=False) if not e or e["status"] != FINISHED]
    if failed:
        seed, end = failed[0]
        raise RuntimeError(
            f"seed {seed} {end['status'] if end else 'ended without status'}: {(end or {}).get('error')}"
        )
    reporter.final([e["final"] for e in ends if e is not None])


def _run_seeds_as_tasks(run_dirs: list[RunDir], reporter: _Reporter, poll_s: float = 0.2) -> None:
    """k seeds at once, each a Ray task in the trial's placement group; their journals are followed."""
    import ray

    from orchestrator.backends.ray_task import run_in_task

    remote = ray.remote(run_in_task)
    cpus = reporter.plan.cpus
    refs = [
        remote.options(num_cpus=cpus, num_gpus=reporter.plan.gpus, max_retries=0).remote(str(r.path)) for r in run_dirs
    ]
    offsets = [0] * len(run_dirs)
    try:
        pending = list(refs)
        while True:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s, fetch_local=False)
            for i, run_dir in enumerate(run_dirs):
                records, offsets[i] = read_journal(run_dir.journal, offsets[i])
                for record in records:
                    if record["event"] == Event.METRICS:
                        reporter.add(i, record["step"], {k: decode_number(v) for k, v in record["metrics"].items()})
                    elif record["event"] == Event.END and record["status"] != FINISHED:
                        pending = []  # one seed failed: the trial failed; do not wait for the others
            if not pending:
                break
    finally:
        for ref in refs:
            ray.cancel(ref)
