"""The ``orch tune`` driver: builds the Tuner from the spec, runs or resumes the sweep, summarises the
trials and writes ``best.yaml``, a complete spec with the best params for ``orch submit best.yaml --seeds N``."""

from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import InputError
from orchestrator.spec.plan import content_hash
from orchestrator.spec.spec import Spec, apply_sets, deep_merge, flatten, load_spec, load_yaml, nest
from orchestrator.tracking.records import FAILED, FINISHED, RUNNING, Role, Tag
from orchestrator.tune import analytics
from orchestrator.tune.lineage import SCHEDULE_FILE
from orchestrator.tune.recorder import TrialSink, callback_class
from orchestrator.tune.section import (
    FINAL_KEY,
    SWEEP_FILE,
    Asha,
    Pbt,
    TuneConfig,
    grid_points,
    param_space,
    parse_tune,
    samples,
)
from orchestrator.tune.trial import TrialPlan, trainable
from orchestrator.vocabulary import TrialStatus


@dataclass
class TrialRow:
    trial_id: str
    status: TrialStatus  # FINISHED | STOPPED (early) | FAILED
    score: float | None
    config: dict[str, Any]
    reports: int
    error: str | None = None
    schedule: list[dict[str, Any]] | None = None  # PBT: the params its state ran with, phase by phase


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
    importance: dict[str, dict[str, float]] = field(default_factory=dict)  # evaluator -> param -> importance


def _spec_doc(path: Path, sets: list[str]) -> dict[str, Any]:
    doc = apply_sets(load_yaml(path), sets)
    doc.pop("_sets", None)
    return doc


def _sweep_dirs(root: Path) -> list[Path]:
    return sorted((p.parent for p in root.glob(f"*/{SWEEP_FILE}")), key=lambda p: p.stat().st_mtime)


def seeds_at_once(cluster: dict[str, float], spec: Spec, seeds: int) -> int:
    """How many of a trial's seeds run at once. Its placement group reserves one bundle per seed, and Ray
    waits forever for a group larger than the cluster (3 seeds of 1 CPU on a 2-core machine): the seeds of a
    trial that does not fit run in waves instead, in the same bundles (the same runs, the same score)."""
    fits = [cluster.get("CPU", 0.0) // spec.resources.cpus]
    if spec.resources.gpus:
        fits.append(cluster.get("GPU", 0.0) // spec.resources.gpus)
    return max(1, min(seeds, int(min(fits))))


def _trainable_for(plan: TrialPlan, config: TuneConfig, spec: Spec, at_once: int):
    from ray import tune

    res: dict[str, float] = {
        "CPU": spec.resources.cpus,
        "GPU": spec.resources.gpus,
        "memory": int(spec.resources.mem_gb * 2**30),
    }
    if len(plan.seeds) == 1:
        resources = tune.PlacementGroupFactory([res])
    else:  # the trial itself only waits; each seed is a task in a bundle of the trial's placement group
        resources = tune.PlacementGroupFactory([{}, *([res] * at_once)])
    return tune.with_resources(tune.with_parameters(trainable, plan=plan), resources)


def run_sweep(
    spec_path: str | Path,
    sets: list[str] | None = None,
    tracking_uri: str | None = None,
    ray_address: str | None = None,
    resume: bool = False,
    best_path: str | Path | None = "best.yaml",
    echo=print,
    sink: TrialSink | None = None,
) -> SweepResult:
    """The sweep, to its end. ``sink`` sees every trial's state at each report (the live trial table)."""
    spec_path = Path(spec_path)
    spec = load_spec(spec_path, sets=sets)
    config = parse_tune(spec)
    doc = _spec_doc(spec_path, sets or [])
    fingerprint = content_hash(doc)
    root = Path(spec.workdir).resolve() / spec.name / "tune"

    from orchestrator.tracking.ledger import Ledger
    from orchestrator.tracking.uri import resolve_uri

    if resume:
        candidates = _sweep_dirs(root)
        if not candidates:
            raise InputError(f"no sweep of '{spec.name}' to resume under {root}", str(spec_path))
        path = candidates[-1]
        meta = json.loads((path / SWEEP_FILE).read_text())
        if meta["fingerprint"] != fingerprint:
            raise InputError(
                f"the spec changed since sweep {meta['sweep']} started; resume it with the same spec "
                "and --set values, or start a new sweep",
                str(spec_path),
            )
        uri = meta["uri"]
    else:
        uri = resolve_uri(tracking_uri, spec.tracking.uri)
    ledger = Ledger(uri)
    experiment_id = ledger.experiment_id(spec.name, create=True)

    from orchestrator.backends.ray_connect import connect, require

    ray = connect(ray_address)
    require(
        ray,
        {"CPU": spec.resources.cpus, "GPU": spec.resources.gpus, "memory": spec.resources.mem_gb * 2**30},
        f"{spec_path}: resources",
    )
    at_once = seeds_at_once(ray.cluster_resources(), spec, config.section.seeds_per_trial)
    if at_once < config.section.seeds_per_trial:
        echo(
            f"a trial's {config.section.seeds_per_trial} seeds do not fit this Ray cluster at once: "
            f"they run {at_once} at a time"
        )
    import logging
    import os

    from ray import tune

    # A workload may log the scheduler's metric only at some steps (eval every k steps, train loss in
    # between): a report without it is not an error; ASHA decides on the reports that have it.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # A failed trial is reported in orch's table and in MLflow (traceback.txt); Tune would also log each
    # traceback at ERROR on the console.
    for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # a trial PBT pauses and restarts makes Tune's own result loggers warn that its result.json is not in the
    # sweep's storage yet; orch records results in MLflow
    logging.getLogger("ray.tune.logger").setLevel(logging.ERROR)
    # PBT passes over the reports without its metric (eval every k steps) after saying so once; orch knows
    logging.getLogger("ray.tune.schedulers.pbt").setLevel(logging.ERROR)

    if resume:
        sweep = meta["sweep"]
        parent_id = meta["parent_run_id"]
        ledger.set_status(parent_id, RUNNING)
        plan = TrialPlan(**{**meta["plan"], "seeds": tuple(meta["plan"]["seeds"])})
        if not tune.Tuner.can_restore(str(path)):
            raise InputError(f"{path} holds no Tune experiment state to restore", str(spec_path))
        echo(f"resuming sweep {sweep} ({path})")
        tuner = tune.Tuner.restore(
            str(path),
            _trainable_for(plan, config, spec, at_once),
            resume_unfinished=True,
            resume_errored=False,
            param_space=param_space(config),
        )
    else:
        sweep = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{content_hash(time.time(), 4)}"
        path = root / sweep
        seeds = tuple(spec.seeds.base + i for i in range(config.section.seeds_per_trial))
        plan = TrialPlan(
            spec.workload or "",
            nest(spec.params),
            seeds,
            spec.resources.cpus,
            spec.resources.gpus,
            str(path / "runs"),
            config.metric,
            config.report,
            config.section.checkpoint_every_s,
            _pbt_plan(config),
        )
        parent_id = _create_parent(ledger, experiment_id, spec, config, sweep, path, doc)
        path.mkdir(parents=True, exist_ok=True)
        meta = {
            "sweep": sweep,
            "parent_run_id": parent_id,
            "experiment_id": experiment_id,
            "uri": uri,
            "fingerprint": fingerprint,
            "plan": {**plan.__dict__, "seeds": list(plan.seeds)},
        }
        (path / SWEEP_FILE).write_text(json.dumps(meta, indent=1))
        tuner = tune.Tuner(
            _trainable_for(plan, config, spec, at_once),
            param_space=param_space(config),
            tune_config=_tune_config(config),
            run_config=_run_config(root, sweep, uri, experiment_id, parent_id, config, plan, sink),
        )
        echo(f"sweep {sweep}: {_describe(config)}; MLflow parent run {parent_id} (tracking: {uri})")
    import random

    random.seed(config.section.search_seed)  # PBT draws its donors and mutations from Python's random
    grid = tuner.fit()
    result = _summarise(grid, sweep, path, parent_id, experiment_id, config)
    _close_parent(ledger, result)
    try:
        result.importance = analytics.record(ledger, parent_id, result.rows, config, config.section.search_seed)
    except Exception as err:  # the analytics are a view of the sweep: their failure must not lose it
        echo(f"sweep analytics not recorded: {type(err).__name__}: {err}")
    if result.best is not None and best_path is not None:
        result.best_yaml = write_best(doc, result, Path(best_path))
    return result


def _pbt_plan(config: TuneConfig) -> dict[str, int] | None:
    pbt = config.section.scheduler
    return {"interval": pbt.perturbation_interval, "burn_in": pbt.burn_in_period} if isinstance(pbt, Pbt) else None


def _pbt_params(config: TuneConfig) -> dict[str, Any]:
    pbt = config.section.scheduler
    if not isinstance(pbt, Pbt):
        return {}
    settings = pbt.model_dump(exclude={"type", "mutations"})
    return {
        **{f"tune.pbt.{k}": v for k, v in settings.items()},
        **{f"tune.pbt.mutations.{d.key}": f"{d.kind}{list(d.args)}" for d in config.mutations},
    }


def _describe(config: TuneConfig) -> str:
    s = config.section
    grid = grid_points(config)
    trials = f"{samples(config) * grid} trials" + (f" ({samples(config)} x a {grid}-point grid)" if grid > 1 else "")
    return (
        f"{s.search} search ({trials}), {s.scheduler.type} scheduler, {config.mode} {config.metric} "
        f"over {s.seeds_per_trial} seed(s) per trial"
    )


def _tune_config(config: TuneConfig):
    from ray import tune

    s = config.section
    scheduler = None
    if isinstance(s.scheduler, Pbt):
        from orchestrator.tune import pbt

        scheduler = pbt.scheduler(config)
    if isinstance(s.scheduler, Asha):
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(
            time_attr=s.scheduler.time_attr,
            max_t=s.scheduler.max_t,
            grace_period=s.scheduler.grace_period,
            reduction_factor=s.scheduler.reduction_factor,
            brackets=s.scheduler.brackets,
            stop_last_trials=False,
        )
    search_alg: Any
    if s.search == "optuna":
        from optuna.samplers import TPESampler

        search_alg = _final_only_optuna()(sampler=TPESampler(seed=s.search_seed))
    else:
        from ray.tune.search import BasicVariantGenerator

        search_alg = BasicVariantGenerator(random_state=s.search_seed)
    num_samples = samples(config)
    return tune.TuneConfig(
        metric=config.metric,
        mode=config.mode,
        scheduler=scheduler,
        search_alg=search_alg,
        num_samples=num_samples,
        max_concurrent_trials=s.max_concurrent,
        reuse_actors=True,
    )  # a trial costs a task, not a new process importing everything


def _final_only_optuna() -> type:
    """Ray's OptunaSearch reads the sweep's metric from every report; a trial's per-step reports carry the
    scheduler's metric (``report``) and only its last one the score: Optuna learns from that one."""
    from ray.tune.search.optuna import OptunaSearch

    class FinalOnlyOptuna(OptunaSearch):
        def on_trial_result(self, trial_id: str, result: dict) -> None:
            if self.metric in result:
                super().on_trial_result(trial_id, result)

    return FinalOnlyOptuna


def _run_config(
    root: Path,
    sweep: str,
    uri: str,
    experiment_id: str,
    parent_id: str,
    config: TuneConfig,
    plan: TrialPlan,
    sink: TrialSink | None = None,
):
    from ray import tune

    mutated = tuple(d.key for d in config.mutations)
    callback = callback_class()(
        uri, experiment_id, parent_id, sweep, config.metric, list(plan.seeds), plan.runs_root, mutated=mutated
    )
    callback.sink = sink
    return tune.RunConfig(
        name=sweep,
        storage_path=str(root),
        callbacks=[callback],
        verbose=0,
        # 2: the experiment state a killed driver saved last may name the one before the latest. PBT: every
        # one (attached at perturbations only), since a trial may restart from a donor's after the donor moved on
        checkpoint_config=tune.CheckpointConfig(num_to_keep=None if mutated else 2),
        failure_config=tune.FailureConfig(max_failures=0),
    )


def _create_parent(
    ledger, experiment_id: str, spec: Spec, config: TuneConfig, sweep: str, path: Path, doc: dict[str, Any]
) -> str:
    from orchestrator.tracking.codeversion import current as code_version

    s = config.section
    code = code_version()
    tags = {
        Tag.ROLE: Role.SWEEP,
        Tag.SWEEP: sweep,
        Tag.WORKLOAD: spec.workload,
        Tag.SPEC: spec.source,
        Tag.METRIC: config.metric,
        Tag.MODE: config.mode,
        Tag.TUNE_PATH: str(path),
        **code.tags(),
    }
    params = {
        "tune.search": s.search,
        "tune.scheduler": s.scheduler.type,
        "tune.num_samples": s.num_samples or "",
        "tune.seeds_per_trial": s.seeds_per_trial,
        "tune.metric": config.metric,
        "tune.mode": config.mode,
        **{f"tune.space.{d.key}": f"{d.kind}{list(d.args)}" for d in config.dimensions},
        **_pbt_params(config),
        **flatten(nest(spec.params)),
    }
    run_id = ledger.create_run(experiment_id, sweep, tags, params, status=RUNNING)
    ledger.log_text(run_id, yaml.safe_dump(doc, sort_keys=False), "spec.yaml")
    return run_id


def _summarise(grid, sweep: str, path: Path, parent_id: str, experiment_id: str, config: TuneConfig) -> SweepResult:
    result = SweepResult(sweep, path, parent_id, experiment_id, config.metric, config.mode)
    for trial_result in grid:
        last = trial_result.metrics or {}
        # a trial that failed before its first report has no metrics: its id is in its directory's name
        trial_id = last.get("trial_id") or "_".join(Path(trial_result.path).name.split("_")[1:3])
        if trial_result.error is not None:
            status, score = TrialStatus.FAILED, None
        elif last.get(FINAL_KEY):
            status, score = TrialStatus.FINISHED, float(last[config.metric])
        else:
            status, score = TrialStatus.STOPPED, None
        error = str(trial_result.error).strip().splitlines()[-1] if trial_result.error is not None else None
        result.rows.append(
            TrialRow(
                trial_id,
                status,
                score,
                dict(trial_result.config or {}),
                int(last.get("training_iteration", 0)),
                error,
                _schedule(path, trial_id) if config.mutations else None,
            )
        )
    finished = [r for r in result.rows if r.score is not None and not math.isnan(r.score)]
    sign = 1 if config.mode == "min" else -1
    result.rows.sort(key=lambda r: (r.score is None, sign * r.score if r.score is not None else 0, r.trial_id))
    result.best = min(finished, key=lambda r: (sign * (r.score or 0.0), r.trial_id)) if finished else None
    return result


def _schedule(path: Path, trial_id: str) -> list[dict[str, Any]] | None:
    saved = path / "runs" / trial_id / SCHEDULE_FILE
    return json.loads(saved.read_text())["schedule"] if saved.exists() else None


def _close_parent(ledger, result: SweepResult) -> None:
    counts = {
        s: sum(1 for r in result.rows if r.status == s)
        for s in (TrialStatus.FINISHED, TrialStatus.STOPPED, TrialStatus.FAILED)
    }
    tags: dict[str, Any] = {f"orch.tune.trials_{k.lower()}": v for k, v in counts.items()}
    if result.best is not None:
        tags[Tag.BEST_TRIAL] = result.best.trial_id
        ledger.client.log_metric(result.parent_run_id, f"best_{result.metric}", result.best.score)
        ledger.set_tags(
            result.parent_run_id, {**tags, **{f"orch.tune.best.{k}": v for k, v in result.best.config.items()}}
        )
        ledger.set_status(result.parent_run_id, FINISHED)
    else:
        ledger.set_tags(result.parent_run_id, tags)
        ledger.set_status(result.parent_run_id, FAILED, "no trial finished")


def write_best(doc: dict[str, Any], result: SweepResult, path: Path) -> Path:
    """The spec with the best trial's params merged in, ready for ``orch submit best.yaml --seeds N``."""
    assert result.best is not None, "no trial finished: nothing to write"
    best = copy.deepcopy(doc)
    best.pop("tune", None)
    best["name"] = f"{doc['name']}-best"
    schedule = result.best.schedule
    first = schedule[0]["params"] if schedule else result.best.config
    best["params"] = deep_merge(nest(doc.get("params") or {}), nest(first))
    if schedule and len(schedule) > 1:  # PBT: the winner's params changed on the way; orch submit replays them
        best["schedule"] = [{"step": phase["step"], "params": phase["params"]} for phase in schedule[1:]]
    # how hard the params were searched for: `orch compare` weighs a baseline tuned less than this (spec's tuning:)
    best["tuning"] = {"trials": len(result.rows), "sweep": result.sweep}
    # Validation must not re-use the seeds the selection saw (the trial's score on them is what chose it):
    # best.yaml's seeds start right after the sweep's.
    seeds = doc.get("seeds")
    base = seeds.get("base", 0) if isinstance(seeds, dict) else 0
    used = (doc.get("tune") or {}).get("seeds_per_trial", 1)
    best["seeds"] = {**(seeds if isinstance(seeds, dict) else {}), "base": base + used}
    lineage = ""
    if schedule and len(schedule) > 1:
        path_of = " -> ".join(f"{p['trial']} from step {p['step']}" for p in schedule)
        lineage = f"# a PBT schedule, its state made by trials {path_of} (orch submit replays it)\n"
    header = (
        f"# written by orch tune: sweep {result.sweep}, best trial {result.best.trial_id}\n{lineage}"
        f"# {result.metric} = {result.best.score:.6g} ({result.mode}, mean over the trial's seeds "
        f"{base}-{base + used - 1})\n"
        f"# validate across seeds: orch submit {path} --seeds 10   (seeds from {base + used}: none the "
        f"sweep saw)\n"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + yaml.safe_dump(best, sort_keys=False))
    return path
