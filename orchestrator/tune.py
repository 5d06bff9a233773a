"""``orch tune``: a Ray Tune sweep over the same YAML spec and the same workloads.

The ``tune:`` section of a spec says what to search (``space``, dotted param keys), how (``search``,
``scheduler``) and what to optimise (``metric``, ``mode``). A trial runs its params on ``seeds_per_trial``
seeds through the ordinary worker (same run directories, journals and determinism as ``orch submit``);
every ``ctx.log`` step reports the mean over those seeds to Tune (so ASHA can stop bad trials early), and
the trial's score is the mean of the final metric over the seeds: tuned for robustness, not for luck.

MLflow stays single-writer: the trials only write run directories; a Tune callback in this (driver)
process records one parent run per sweep and one child per trial (params, reported history, final status,
early stops tagged). At the end: a table of the top trials and ``best.yaml``, a complete spec with the
best params for ``orch submit best.yaml --seeds N``. ``--resume`` continues a sweep whose driver died."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import shutil
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field

from orchestrator import registry
from orchestrator.errors import InputError, did_you_mean
from orchestrator.journal import decode_number, read_journal
from orchestrator.plan import Run, content_hash
from orchestrator.rundir import RunDir
from orchestrator.spec import Spec, apply_sets, deep_merge, flatten, load_spec, load_yaml, nest, param_path_exists

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "grid")
SEARCHERS = ("random", "grid", "optuna")
SCHEDULERS = ("fifo", "asha")
FINAL_KEY = "orch_final"       # in a trial's last report: the run ended and its score is the final metric
METRICS_KEY = "orch_metrics"   # the workload's own metrics (seed means) inside each report
SWEEP_FILE = "orch_sweep.json"


# -- the tune: section ------------------------------------------------------------------------------
class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Fifo(Strict):
    type: Literal["fifo"] = "fifo"


class Asha(Strict):
    type: Literal["asha"] = "asha"
    time_attr: str = Field("training_iteration", description="what counts as time: one report per logged step")
    max_t: int = Field(100, gt=0, description="the last rung; trials are never stopped just for reaching it")
    grace_period: int = Field(1, gt=0, description="reports before a trial can be stopped")
    reduction_factor: float = Field(4.0, gt=1, description="1/reduction_factor of trials go on at each rung")
    brackets: int = Field(1, gt=0)

    @pydantic.model_validator(mode="after")
    def _grace_below_max(self) -> Asha:
        if self.grace_period > self.max_t:
            raise ValueError(f"grace_period ({self.grace_period}) must be <= max_t ({self.max_t})")
        return self


class TuneSection(Strict):
    metric: str | None = Field(None, description="final metric to optimise (default: the workload's METRIC)")
    mode: Literal["min", "max"] | None = Field(None, description="default: the workload's MODE")
    report: str | None = Field(None, description="per-step metric (ctx.log) the scheduler compares while "
                                                 "trials run (default: same name as metric)")
    num_samples: int | None = Field(None, gt=0, description="samples (default 10; 1 when every dimension is a "
                                                             "grid); grid dimensions are crossed with each sample")
    max_concurrent: int | None = Field(None, gt=0, description="trials at once (default: as resources allow)")
    scheduler: Annotated[Fifo | Asha, Field(discriminator="type")] = Field(default_factory=Fifo)
    search: Literal["random", "grid", "optuna"] = "random"
    space: dict[str, dict[str, Any]] = Field(..., description="dotted param key -> {distribution: arguments}")
    seeds_per_trial: int = Field(1, gt=0, description="a trial's score is the mean over this many seeds")
    search_seed: int = Field(0, ge=0, description="seed of the sampler: the same spec samples the same trials")
    checkpoint_every_s: float = Field(10.0, ge=0, description="how often a trial's latest checkpoints are copied "
                                                            "into Tune's storage (run directories keep them all)")

    @pydantic.field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in SCHEDULERS:
                raise ValueError(f"unknown scheduler '{value}'{did_you_mean(value, SCHEDULERS)}; "
                                 f"expected one of: {', '.join(SCHEDULERS)}")
            return {"type": value}
        return value


@dataclass(frozen=True)
class Dimension:
    key: str            # dotted param path
    kind: str           # one of DISTRIBUTIONS
    args: tuple         # values (choice, grid) or (low, high)


@dataclass(frozen=True)
class TuneConfig:
    section: TuneSection
    metric: str
    mode: str
    report: str
    dimensions: tuple[Dimension, ...]


def _pydantic_error(err: pydantic.ValidationError, source: str, prefix: str) -> InputError:
    errors = err.errors()
    # an unknown key usually explains a "missing" one (a typo): report it first, with a suggestion
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    parts = [str(p) for p in first["loc"]]
    # drop pydantic's union tags (scheduler.asha.max_t -> scheduler.max_t): they are not in the YAML
    parts = [p for i, p in enumerate(parts) if not (i and parts[i - 1] == "scheduler" and p in SCHEDULERS)]
    loc = ".".join(parts)
    if first["type"] == "extra_forbidden":
        known = [f for f in TuneSection.model_fields] if len(parts) == 1 else []
        return InputError(f"unknown field{did_you_mean(parts[-1], known)}"
                          + (f"; expected one of: {', '.join(known)}" if known else ""), source, f"{prefix}.{loc}")
    got = f" (got {first['input']!r})" if not isinstance(first.get("input"), dict) else ""
    return InputError(f"{first['msg']}{got}", source, f"{prefix}.{loc}" if loc else prefix)


def _bound_error(model: type[BaseModel], key: str, value: Any, source: str, field: str) -> None:
    """Each bound or choice must itself be a valid value of the param: checked before any trial runs."""
    try:
        model.model_validate(nest({key: value}))
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        raise InputError(f"{first['msg']} (got {value!r}): not a valid value of param '{key}'", source, field) from None


def _dimension(model: type[BaseModel], key: str, dist: dict[str, Any], search: str, source: str) -> Dimension:
    where = f"tune.space.{key}"
    if not param_path_exists(model, key):
        leaf = key.rsplit(".", 1)[-1]
        known = list(flatten(model().model_dump(mode="json")))
        raise InputError(f"no such param{did_you_mean(key, known) or did_you_mean(leaf, known)}; "
                         f"known: {', '.join(known)}", source, where)
    if not isinstance(dist, dict) or len(dist) != 1:
        raise InputError(f"expected one distribution, e.g. {{uniform: [0.1, 1.0]}}; one of: "
                         f"{', '.join(DISTRIBUTIONS)}", source, where)
    (kind, args), = dist.items()
    if kind not in DISTRIBUTIONS:
        raise InputError(f"unknown distribution '{kind}'{did_you_mean(str(kind), DISTRIBUTIONS)}; expected one of: "
                         f"{', '.join(DISTRIBUTIONS)}", source, f"{where}.{kind}")
    if not isinstance(args, list) or not args:
        raise InputError(f"expected a non-empty list of {'values' if kind in ('choice', 'grid') else '[low, high]'}",
                         source, f"{where}.{kind}")
    if kind in ("choice", "grid"):
        for i, value in enumerate(args):
            _bound_error(model, key, value, source, f"{where}.{kind}[{i}]")
    else:
        if len(args) != 2 or not all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args):
            raise InputError(f"expected [low, high] (two numbers), got {args!r}", source, f"{where}.{kind}")
        low, high = args
        if kind == "randint" and not all(isinstance(a, int) for a in args):
            raise InputError(f"randint bounds must be integers, got {args!r}", source, f"{where}.{kind}")
        if not low < high:
            raise InputError(f"low must be below high, got [{low}, {high}]", source, f"{where}.{kind}")
        if kind == "loguniform" and low <= 0:
            raise InputError(f"loguniform needs low > 0, got {low}", source, f"{where}.{kind}")
        _bound_error(model, key, low, source, f"{where}.{kind}[0]")
        _bound_error(model, key, high - 1 if kind == "randint" else high, source, f"{where}.{kind}[1]")
    if search == "grid" and kind != "grid":
        raise InputError(f"search: grid covers a grid exactly; '{kind}' is not a grid (use {{grid: [...]}} "
                         "or search: random)", source, f"{where}.{kind}")
    if search == "optuna" and kind == "grid":
        raise InputError("optuna samples; it cannot cover a grid (use choice, or search: grid)", source, f"{where}.{kind}")
    return Dimension(key, kind, tuple(args))


def parse_tune(spec: Spec) -> TuneConfig:
    """Validate the spec's ``tune:`` section against the workload: bad distributions, bounds or keys are
    InputErrors naming the file and the field path (exit 2, nothing started)."""
    source = spec.source
    if spec.tune is None:
        raise InputError("no 'tune:' section: say what to search, e.g. tune: {space: {lr: {loguniform: "
                         "[1e-4, 1e-1]}}}", source, "tune")
    if spec.variants or spec.grid:
        field = "variants" if spec.variants else "grid"
        raise InputError(f"a sweep searches params + tune.space; '{field}' is for orch submit (put grid axes in "
                         "tune.space as {grid: [...]})", source, field)
    try:
        section = TuneSection.model_validate(spec.tune)
    except pydantic.ValidationError as err:
        raise _pydantic_error(err, source, "tune") from None
    if not section.space:
        raise InputError("empty: name at least one param to search", source, "tune.space")
    if section.search == "optuna" and importlib.util.find_spec("optuna") is None:
        raise InputError("search 'optuna' needs the optuna package: pip install optuna (or use random)",
                         source, "tune.search")
    if section.search == "grid" and (section.num_samples or 1) != 1:
        raise InputError("grid search covers the grid exactly once; use seeds_per_trial for repeats",
                         source, "tune.num_samples")
    workload = registry.get(spec.workload)
    from orchestrator.spec import validate_params
    validate_params(workload.params_model, nest(spec.params), source, "params")
    dims = tuple(_dimension(workload.params_model, key, dist, section.search, source)
                 for key, dist in section.space.items())
    metric = section.metric or (spec.metric.name if spec.metric else workload.metric)
    mode = section.mode or (spec.metric.mode if spec.metric else workload.mode)
    return TuneConfig(section, metric, mode, section.report or metric, dims)


def param_space(config: TuneConfig) -> dict[str, Any]:
    from ray import tune
    makers = {"choice": lambda a: tune.choice(list(a)), "grid": lambda a: tune.grid_search(list(a)),
              "uniform": lambda a: tune.uniform(*a), "loguniform": lambda a: tune.loguniform(*a),
              "randint": lambda a: tune.randint(*a)}
    return {d.key: makers[d.kind](d.args) for d in config.dimensions}


# -- the trial ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialPlan:
    """Everything a trial needs, picklable (it travels to Ray workers)."""
    workload: str
    params: dict[str, Any]        # the spec's params, nested (the sampled ones are merged on top)
    seeds: tuple[int, ...]
    cpus: int
    gpus: int
    runs_root: str                # run directories: <runs_root>/<trial_id>/seed<seed>
    metric: str
    report: str
    checkpoint_every_s: float = 10.0


class StepMeans:
    """Per-step means over the seeds of a trial, emitted in step order once every seed logged the step.
    A workload may log a step more than once (train metrics, then eval metrics at the same step): the new
    keys are emitted again for that step. A resumed seed replays steps already emitted: nothing new."""

    def __init__(self, seeds: int):
        self.seeds = seeds
        self.logged: dict[int, list[dict[str, float]]] = defaultdict(lambda: [{} for _ in range(seeds)])
        self.emitted: dict[int, set[str]] = defaultdict(set)
        self.last = -1   # the last step emitted
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

    def add(self, seed_index: int, step: int, metrics: dict[str, float]) -> None:
        for s, means in self.means.add(seed_index, step, metrics):
            result = {"step": s, FINAL_KEY: 0, METRICS_KEY: means}
            if self.plan.report in means:
                result[self.plan.metric] = means[self.plan.report]
            checkpoint = self._checkpoint()
            self.tune.report(result, checkpoint=checkpoint)
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
        for seed, run_dir in zip(self.plan.seeds, self.run_dirs):
            if run_dir.checkpoint.exists():
                shutil.copy2(run_dir.checkpoint, folder / f"seed{seed}.pkl")
        from ray.tune import Checkpoint
        return Checkpoint.from_directory(str(folder))

    def final(self, finals: list[dict[str, float]]) -> None:
        keys = set.intersection(*(set(f) for f in finals))
        if self.plan.metric not in keys:
            raise RuntimeError(f"tune.metric '{self.plan.metric}' is not among the workload's final metrics "
                               f"({', '.join(sorted(keys))})")
        means = {k: statistics.fmean(decode_number(f[k]) for f in finals) for k in sorted(keys)}
        self.tune.report({"step": self.means.last + 1, FINAL_KEY: 1, METRICS_KEY: means,
                          self.plan.metric: means[self.plan.metric]})


def _journal_end(run_dir: RunDir) -> dict[str, Any] | None:
    ends = [r for r in read_journal(run_dir.journal)[0] if r["event"] == "end"]
    return ends[-1] if ends else None


def _restore_checkpoints(plan: TrialPlan, run_dirs: list[RunDir]) -> None:
    from ray import tune
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        for seed, run_dir in zip(plan.seeds, run_dirs):
            saved = Path(folder) / f"seed{seed}.pkl"
            if saved.exists() and not run_dir.checkpoint.exists():  # a run directory's own is never older
                shutil.copy2(saved, run_dir.checkpoint)


def trial_run_dirs(plan: TrialPlan, trial_id: str, config: dict[str, Any]) -> list[RunDir]:
    model = registry.get(plan.workload).params_model
    params = model.model_validate(deep_merge(plan.params, nest(config))).model_dump(mode="json")
    run_dirs = []
    for i, seed in enumerate(plan.seeds):
        run_dir = RunDir(Path(plan.runs_root) / trial_id / f"seed{seed}")
        if not run_dir.spec_file.exists():
            run = Run(plan.workload, params, seed, "tune", dict(config), i)
            run_dir.create({"run": run.to_dict(), "run_id": None, "experiment_id": None, "trial_id": trial_id,
                            "cpus": plan.cpus, "gpus": plan.gpus})
        run_dirs.append(run_dir)
    return run_dirs


def trainable(config: dict[str, Any], plan: TrialPlan) -> None:
    """One trial: the worker on each seed; a seed-mean report per logged step, then the final score."""
    from ray import tune
    run_dirs = trial_run_dirs(plan, tune.get_context().get_trial_id(), config)
    _restore_checkpoints(plan, run_dirs)
    reporter = _Reporter(plan, run_dirs)
    if len(run_dirs) == 1:
        from orchestrator import worker
        from orchestrator.rundir import output_to
        with output_to(run_dirs[0]):
            worker.execute(run_dirs[0].path, extra_callbacks=[lambda step, m: reporter.add(0, step, m)])
    else:
        _run_seeds_as_tasks(run_dirs, reporter)
    ends = [_journal_end(r) for r in run_dirs]
    failed = [(seed, e) for seed, e in zip(plan.seeds, ends) if not e or e["status"] != "FINISHED"]
    if failed:
        seed, end = failed[0]
        raise RuntimeError(f"seed {seed} {end['status'] if end else 'ended without status'}: "
                           f"{(end or {}).get('error')}")
    reporter.final([e["final"] for e in ends])


def _run_seeds_as_tasks(run_dirs: list[RunDir], reporter: _Reporter, poll_s: float = 0.2) -> None:
    """k seeds at once, each a Ray task in the trial's placement group; their journals are followed."""
    import ray
    from orchestrator.backends.ray import run_in_task
    remote = ray.remote(run_in_task)
    cpus = reporter.plan.cpus
    refs = [remote.options(num_cpus=cpus, num_gpus=reporter.plan.gpus, max_retries=0).remote(str(r.path))
            for r in run_dirs]
    offsets = [0] * len(run_dirs)
    try:
        pending = list(refs)
        while True:
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=poll_s, fetch_local=False)
            for i, run_dir in enumerate(run_dirs):
                records, offsets[i] = read_journal(run_dir.journal, offsets[i])
                for record in records:
                    if record["event"] == "metrics":
                        reporter.add(i, record["step"], {k: decode_number(v) for k, v in record["metrics"].items()})
                    elif record["event"] == "end" and record["status"] != "FINISHED":
                        pending = []  # one seed failed: the trial failed; do not wait for the others
            if not pending:
                break
    finally:
        for ref in refs:
            ray.cancel(ref)


# -- MLflow, from the driver -------------------------------------------------------------------------
class SweepRecorder:
    """A Tune callback (driver side): the sweep's parent run and one child run per trial. Picklable (Tune
    saves it with the experiment, for ``Tuner.restore``): the MLflow client is made on first use, and
    trial runs are found again by tag after a restore."""

    def __init__(self, uri: str, experiment_id: str, parent_id: str, sweep: str, metric: str, seeds: list[int],
                 runs_root: str, flush_s: float = 2.0):
        self.uri, self.experiment_id, self.parent_id, self.sweep = uri, experiment_id, parent_id, sweep
        self.metric, self.seeds, self.runs_root, self.flush_s = metric, seeds, runs_root, flush_s
        self._ledger = None
        self._run_ids: dict[str, str] = {}
        self._buffer: dict[str, list] = defaultdict(list)
        self._flushed = time.monotonic()

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_ledger", "_run_ids", "_buffer")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._ledger, self._run_ids, self._buffer = None, {}, defaultdict(list)

    @property
    def ledger(self):
        if self._ledger is None:
            from orchestrator.ledger import Ledger
            self._ledger = Ledger(self.uri)
        return self._ledger

    def run_id(self, trial) -> str:
        if trial.trial_id in self._run_ids:
            return self._run_ids[trial.trial_id]
        found = self.ledger.client.search_runs(
            [self.experiment_id], max_results=1,
            filter_string=f"tags.`orch.tune.sweep` = '{self.sweep}' and tags.`orch.tune.trial_id` = '{trial.trial_id}'")
        if found:
            run_id = found[0].info.run_id
        else:
            config = {k: v for k, v in flatten(trial.config).items()}
            tags = {"orch.role": "trial", "orch.tune.sweep": self.sweep, "orch.tune.trial_id": trial.trial_id,
                    "orch.seeds": ",".join(map(str, self.seeds)), "orch.metric": self.metric,
                    "orch.run_dir": str(Path(self.runs_root) / trial.trial_id)}
            run_id = self.ledger.create_run(self.experiment_id, f"{self.sweep}/{trial.trial_id}", tags,
                                            {**config, "seeds_per_trial": len(self.seeds)},
                                            parent_id=self.parent_id, status="RUNNING")
        self._run_ids[trial.trial_id] = run_id
        return run_id

    # Tune's Callback interface (duck-typed methods, subclassed below once Ray is imported)
    def on_trial_start(self, iteration, trials, trial, **info):
        self.ledger.set_status(self.run_id(trial), "RUNNING")

    on_trial_restore = on_trial_start

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric
        stamp = int(time.time() * 1000)
        step = int(result.get("step", result.get("training_iteration", 0)))
        for name, value in (result.get(METRICS_KEY) or {}).items():
            self._buffer[trial.trial_id].append(Metric(name, float(value), stamp, step))
        if result.get(FINAL_KEY):
            self._buffer[trial.trial_id].append(Metric("score", float(result[self.metric]), stamp, step))
        if time.monotonic() - self._flushed > self.flush_s:
            self.flush()

    def flush(self, trial_id: str | None = None) -> None:
        for tid in [trial_id] if trial_id else list(self._buffer):
            metrics = self._buffer.pop(tid, [])
            for i in range(0, len(metrics), 1000):
                self.ledger.client.log_batch(self._run_ids[tid], metrics=metrics[i:i + 1000])
        self._flushed = time.monotonic()

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        self.flush(trial.trial_id)
        last = trial.last_result or {}
        iterations = last.get("training_iteration", 0)
        if last.get(FINAL_KEY):
            self.ledger.set_status(run_id, "FINISHED")
        else:  # completed without its final report: a scheduler (ASHA) stopped it
            self.ledger.set_tags(run_id, {"orch.tune.early_stopped": "true",
                                          "orch.tune.stopped_at_iteration": iterations})
            self.ledger.set_status(run_id, "KILLED", f"stopped early by the scheduler after {iterations} reports")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        self.flush(trial.trial_id)
        message = str(getattr(trial, "error_msg", None) or "trial failed")
        error_file = getattr(trial, "error_file", None)
        if error_file and Path(error_file).exists():
            message = Path(error_file).read_text()
        self.ledger.log_text(run_id, message, "traceback.txt")
        lines = [line for line in message.strip().splitlines() if line.strip()]
        self.ledger.set_status(run_id, "FAILED", lines[-1] if lines else "trial failed")


_CALLBACK_CLASS: type | None = None


def _callback_class() -> type:
    """SweepRecorder as a ``ray.tune.Callback`` subclass, made on first use so that importing this module
    (to validate a spec) does not import Ray. Reachable as ``orchestrator.tune.SweepRecorderCallback``, so
    the pickled experiment state finds it again on ``Tuner.restore`` in a fresh process."""
    global _CALLBACK_CLASS
    if _CALLBACK_CLASS is None:
        from ray import tune
        _CALLBACK_CLASS = type("SweepRecorderCallback", (SweepRecorder, tune.Callback), {"__module__": __name__})
    return _CALLBACK_CLASS


def __getattr__(name: str):
    if name == "SweepRecorderCallback":
        return _callback_class()
    raise AttributeError(name)


# -- the driver --------------------------------------------------------------------------------------
@dataclass
class TrialRow:
    trial_id: str
    status: str               # FINISHED | STOPPED (early) | FAILED
    score: float | None
    config: dict[str, Any]
    reports: int
    error: str | None = None


@dataclass
class SweepResult:
    sweep: str
    path: Path
    parent_run_id: str
    experiment_id: str
    metric: str
    mode: str
    rows: list[TrialRow] = field(default_factory=list)
    best: TrialRow | None = None
    best_yaml: Path | None = None


def _spec_doc(path: Path, sets: list[str]) -> dict[str, Any]:
    doc = apply_sets(load_yaml(path), sets)
    doc.pop("_sets", None)
    return doc


def _sweep_dirs(root: Path) -> list[Path]:
    return sorted((p.parent for p in root.glob(f"*/{SWEEP_FILE}")), key=lambda p: p.stat().st_mtime)


def _trainable_for(plan: TrialPlan, config: TuneConfig, spec: Spec):
    from ray import tune
    res = {"CPU": spec.resources.cpus, "GPU": spec.resources.gpus, "memory": int(spec.resources.mem_gb * 2**30)}
    if len(plan.seeds) == 1:
        resources = tune.PlacementGroupFactory([res])
    else:  # the trial itself only waits; each seed is a task in its own bundle of the trial's placement group
        resources = tune.PlacementGroupFactory([{}] + [res] * len(plan.seeds))
    return tune.with_resources(tune.with_parameters(trainable, plan=plan), resources)


def run_sweep(spec_path: str | Path, sets: list[str] | None = None, tracking_uri: str | None = None,
              ray_address: str | None = None, resume: bool = False, best_path: str | Path | None = "best.yaml",
              echo=print) -> SweepResult:
    spec_path = Path(spec_path)
    spec = load_spec(spec_path, sets=sets)
    config = parse_tune(spec)
    doc = _spec_doc(spec_path, sets or [])
    fingerprint = content_hash(doc)
    root = Path(spec.workdir).resolve() / spec.name / "tune"

    from orchestrator.ledger import Ledger, resolve_uri
    if resume:
        candidates = _sweep_dirs(root)
        if not candidates:
            raise InputError(f"no sweep of '{spec.name}' to resume under {root}", str(spec_path))
        path = candidates[-1]
        meta = json.loads((path / SWEEP_FILE).read_text())
        if meta["fingerprint"] != fingerprint:
            raise InputError(f"the spec changed since sweep {meta['sweep']} started; resume it with the same spec "
                             "and --set values, or start a new sweep", str(spec_path))
        uri = meta["uri"]
    else:
        uri = resolve_uri(tracking_uri, spec.tracking.uri)
    ledger = Ledger(uri)
    experiment_id = ledger.experiment_id(spec.name, create=True)

    from orchestrator.backends.ray import connect, require
    ray = connect(ray_address)
    require(ray, {"CPU": spec.resources.cpus, "GPU": spec.resources.gpus, "memory": spec.resources.mem_gb * 2**30},
            f"{spec_path}: resources")
    from ray import tune
    import logging
    import os
    # A workload may log the scheduler's metric only at some steps (eval every k steps, train loss in
    # between): a report without it is not an error; ASHA decides on the reports that have it.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # A failed trial is reported in orch's table and in MLflow (traceback.txt); Tune would also log each
    # traceback at ERROR on the console.
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    if resume:
        sweep = meta["sweep"]
        parent_id = meta["parent_run_id"]
        ledger.set_status(parent_id, "RUNNING")
        plan = TrialPlan(**{**meta["plan"], "seeds": tuple(meta["plan"]["seeds"])})
        if not tune.Tuner.can_restore(str(path)):
            raise InputError(f"{path} holds no Tune experiment state to restore", str(spec_path))
        echo(f"resuming sweep {sweep} ({path})")
        tuner = tune.Tuner.restore(str(path), _trainable_for(plan, config, spec), resume_unfinished=True,
                                   resume_errored=False, param_space=param_space(config))
    else:
        sweep = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{content_hash(time.time(), 4)}"
        path = root / sweep
        seeds = tuple(spec.seeds.base + i for i in range(config.section.seeds_per_trial))
        plan = TrialPlan(spec.workload, nest(spec.params), seeds, spec.resources.cpus, spec.resources.gpus,
                         str(path / "runs"), config.metric, config.report, config.section.checkpoint_every_s)
        parent_id = _create_parent(ledger, experiment_id, spec, config, sweep, path, doc)
        path.mkdir(parents=True, exist_ok=True)
        meta = {"sweep": sweep, "parent_run_id": parent_id, "experiment_id": experiment_id, "uri": uri,
                "fingerprint": fingerprint, "plan": {**plan.__dict__, "seeds": list(plan.seeds)}}
        (path / SWEEP_FILE).write_text(json.dumps(meta, indent=1))
        tuner = tune.Tuner(_trainable_for(plan, config, spec), param_space=param_space(config),
                           tune_config=_tune_config(config),
                           run_config=_run_config(root, sweep, uri, experiment_id, parent_id, config, plan))
        echo(f"sweep {sweep}: {_describe(config)}; MLflow parent run {parent_id} (tracking: {uri})")
    grid = tuner.fit()
    result = _summarise(grid, sweep, path, parent_id, experiment_id, config)
    _close_parent(ledger, result)
    if result.best is not None and best_path is not None:
        result.best_yaml = write_best(doc, result, Path(best_path))
    return result


def samples(config: TuneConfig) -> int:
    """Tune's num_samples: passes over the grid dimensions, each with fresh draws of the others. Default:
    one pass when every dimension is a grid, else 10 draws."""
    s = config.section
    if s.search == "grid" or all(d.kind == "grid" for d in config.dimensions):
        return s.num_samples or 1
    return s.num_samples or 10


def _describe(config: TuneConfig) -> str:
    s = config.section
    grid = math.prod(len(d.args) for d in config.dimensions if d.kind == "grid")
    trials = f"{samples(config) * grid} trials" + (f" ({samples(config)} x a {grid}-point grid)" if grid > 1 else "")
    return (f"{s.search} search ({trials}), {s.scheduler.type} scheduler, {config.mode} {config.metric} "
            f"over {s.seeds_per_trial} seed(s) per trial")


def _tune_config(config: TuneConfig):
    from ray import tune
    s = config.section
    scheduler = None
    if isinstance(s.scheduler, Asha):
        from ray.tune.schedulers import ASHAScheduler
        scheduler = ASHAScheduler(time_attr=s.scheduler.time_attr, max_t=s.scheduler.max_t,
                                  grace_period=s.scheduler.grace_period, reduction_factor=s.scheduler.reduction_factor,
                                  brackets=s.scheduler.brackets, stop_last_trials=False)
    if s.search == "optuna":
        from ray.tune.search.optuna import OptunaSearch
        from optuna.samplers import TPESampler
        search_alg = OptunaSearch(sampler=TPESampler(seed=s.search_seed))
    else:
        from ray.tune.search import BasicVariantGenerator
        search_alg = BasicVariantGenerator(random_state=s.search_seed)
    num_samples = samples(config)
    return tune.TuneConfig(metric=config.metric, mode=config.mode, scheduler=scheduler, search_alg=search_alg,
                           num_samples=num_samples, max_concurrent_trials=s.max_concurrent,
                           reuse_actors=True)  # a trial costs a task, not a new process importing everything


def _run_config(root: Path, sweep: str, uri: str, experiment_id: str, parent_id: str, config: TuneConfig,
                plan: TrialPlan):
    from ray import tune
    callback = _callback_class()(uri, experiment_id, parent_id, sweep, config.metric, list(plan.seeds), plan.runs_root)
    return tune.RunConfig(name=sweep, storage_path=str(root), callbacks=[callback], verbose=0,
                          # 2: the experiment state a killed driver saved last may name the one before the latest
                          checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                          failure_config=tune.FailureConfig(max_failures=0))


def _create_parent(ledger, experiment_id: str, spec: Spec, config: TuneConfig, sweep: str, path: Path,
                   doc: dict[str, Any]) -> str:
    from orchestrator.codeversion import current as code_version
    s = config.section
    code = code_version()
    tags = {"orch.role": "sweep", "orch.tune.sweep": sweep, "orch.workload": spec.workload, "orch.spec": spec.source,
            "orch.metric": config.metric, "orch.mode": config.mode, "orch.tune.path": str(path), **code.tags()}
    params = {"tune.search": s.search, "tune.scheduler": s.scheduler.type, "tune.num_samples": s.num_samples or "",
              "tune.seeds_per_trial": s.seeds_per_trial, "tune.metric": config.metric, "tune.mode": config.mode,
              **{f"tune.space.{d.key}": f"{d.kind}{list(d.args)}" for d in config.dimensions},
              **flatten(nest(spec.params))}
    run_id = ledger.create_run(experiment_id, sweep, tags, params, status="RUNNING")
    ledger.log_text(run_id, yaml.safe_dump(doc, sort_keys=False), "spec.yaml")
    return run_id


def _summarise(grid, sweep: str, path: Path, parent_id: str, experiment_id: str, config: TuneConfig) -> SweepResult:
    result = SweepResult(sweep, path, parent_id, experiment_id, config.metric, config.mode)
    for trial_result in grid:
        last = trial_result.metrics or {}
        # a trial that failed before its first report has no metrics: its id is in its directory's name
        trial_id = last.get("trial_id") or "_".join(Path(trial_result.path).name.split("_")[1:3])
        if trial_result.error is not None:
            status, score = "FAILED", None
        elif last.get(FINAL_KEY):
            status, score = "FINISHED", float(last[config.metric])
        else:
            status, score = "STOPPED", None
        error = str(trial_result.error).strip().splitlines()[-1] if trial_result.error is not None else None
        result.rows.append(TrialRow(trial_id, status, score, dict(trial_result.config or {}),
                                    int(last.get("training_iteration", 0)), error))
    finished = [r for r in result.rows if r.score is not None and not math.isnan(r.score)]
    sign = 1 if config.mode == "min" else -1
    result.rows.sort(key=lambda r: (r.score is None, sign * r.score if r.score is not None else 0, r.trial_id))
    result.best = min(finished, key=lambda r: (sign * r.score, r.trial_id)) if finished else None
    return result


def _close_parent(ledger, result: SweepResult) -> None:
    counts = {s: sum(1 for r in result.rows if r.status == s) for s in ("FINISHED", "STOPPED", "FAILED")}
    tags = {f"orch.tune.trials_{k.lower()}": v for k, v in counts.items()}
    if result.best is not None:
        tags["orch.tune.best_trial"] = result.best.trial_id
        ledger.client.log_metric(result.parent_run_id, f"best_{result.metric}", result.best.score)
        ledger.set_tags(result.parent_run_id, {**tags, **{f"orch.tune.best.{k}": v for k, v in result.best.config.items()}})
        ledger.set_status(result.parent_run_id, "FINISHED")
    else:
        ledger.set_tags(result.parent_run_id, tags)
        ledger.set_status(result.parent_run_id, "FAILED", "no trial finished")


def write_best(doc: dict[str, Any], result: SweepResult, path: Path) -> Path:
    """The spec with the best trial's params merged in, ready for ``orch submit best.yaml --seeds N``."""
    best = copy.deepcopy(doc)
    best.pop("tune", None)
    best["name"] = f"{doc['name']}-best"
    best["params"] = deep_merge(nest(doc.get("params") or {}), nest(result.best.config))
    header = (f"# written by orch tune: sweep {result.sweep}, best trial {result.best.trial_id}\n"
              f"# {result.metric} = {result.best.score:.6g} ({result.mode}, mean over the trial's seeds)\n"
              f"# validate across seeds: orch submit {path} --seeds 10\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(best, sort_keys=False))
    return path


__all__ = ["parse_tune", "run_sweep", "TuneSection", "TuneConfig", "StepMeans", "SweepResult", "write_best"]
