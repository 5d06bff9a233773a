"""The ``tune:`` section of a spec: what to search (``space``, dotted param keys), how (``search``,
``scheduler``) and what to optimise (``metric``, ``mode``). Validated against the workload's Params before
Ray is imported, so a bad sweep is refused like any bad spec (file, field, what was expected)."""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import InputError, did_you_mean, invalid
from orchestrator.spec import registry
from orchestrator.spec.spec import Spec, flatten, nest, param_path_exists

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint", "grid")
SCHEDULERS = ("fifo", "asha", "pbt", "pb2")
FINAL_KEY = "orch_final"  # in a trial's last report: the run ended and its score is the final metric
METRICS_KEY = "orch_metrics"  # the workload's own metrics (seed means) inside each report
SWEEP_FILE = "orch_sweep.json"
TIME_KEY = "orch_checkpointed_steps"  # PBT's clock: steps done at the trial's latest checkpoint (pbt.py)
CHECKPOINT_DECLARATION = "CHECKPOINT_EVERY"  # a workload module's attribute: it checkpoints (pbt.py)


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


class Pbt(Strict):
    """Population Based Training (Jaderberg et al. 2017; Ray's PopulationBasedTraining): every
    ``perturbation_interval`` steps of its own, a trial in the bottom quantile restarts from the checkpoint of
    one in the top quantile with that trial's params mutated (tune/pbt.py)."""

    type: Literal["pbt"] = "pbt"
    perturbation_interval: int = Field(
        ..., gt=0, description="workload steps between perturbations; a multiple of its checkpoint interval"
    )
    burn_in_period: int = Field(0, ge=0, description="steps before the first perturbation")
    quantile_fraction: float = Field(0.25, gt=0, le=0.5, description="the bottom fraction exploits the top one")
    resample_probability: float = Field(0.25, ge=0, le=1, description="chance a mutated value is drawn afresh")
    perturbation_factors: tuple[float, float] = Field(
        (1.2, 0.8), description="a numeric value is multiplied by one of these (then kept within its bounds)"
    )
    mutations: dict[str, dict[str, Any]] | None = Field(
        None, description="dotted param key -> distribution (as in space); default: the space"
    )

    @pydantic.field_validator("perturbation_factors")
    @classmethod
    def _positive(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(f > 0 for f in value):
            raise ValueError(f"factors must be > 0, got {list(value)}")
        return value


class Pb2(Pbt):
    """PB2 (Parker-Holder et al. 2020, "Provably efficient online hyperparameter optimization with
    population-based bandits"; Ray's PB2): PBT whose explore step picks the new values with a time-varying
    Gaussian-process bandit over each mutated param's bounds instead of random factors, for small populations.
    Same checkpoint contract, records and replay as PBT; continuous bounds only."""

    type: Literal["pb2"] = "pb2"  # type: ignore[assignment]

    @pydantic.model_validator(mode="after")
    def _pbt_only_settings(self) -> Pb2:
        given = sorted({"burn_in_period", "resample_probability", "perturbation_factors"} & self.model_fields_set)
        if given:
            raise ValueError(
                f"pb2 chooses new values with its bandit, not by {', '.join(given)}: remove it (or use type: pbt)"
            )
        return self


class TuneSection(Strict):
    metric: str | None = Field(None, description="final metric to optimise (default: the workload's METRIC)")
    mode: Literal["min", "max"] | None = Field(None, description="default: the workload's MODE")
    report: str | None = Field(
        None,
        description="per-step metric (ctx.log) the scheduler compares while trials run (default: same name as metric)",
    )
    num_samples: int | None = Field(
        None,
        gt=0,
        description="samples (default 10; 1 when every dimension is a "
        "grid); grid dimensions are crossed with each sample",
    )
    max_concurrent: int | None = Field(None, gt=0, description="trials at once (default: as resources allow)")
    scheduler: Annotated[Fifo | Asha | Pbt | Pb2, Field(discriminator="type")] = Field(default_factory=Fifo)
    search: Literal["random", "grid", "optuna"] = "random"
    space: dict[str, dict[str, Any]] = Field(..., description="dotted param key -> {distribution: arguments}")
    seeds_per_trial: int = Field(1, gt=0, description="a trial's score is the mean over this many seeds")
    search_seed: int = Field(0, ge=0, description="seed of the sampler: the same spec samples the same trials")
    checkpoint_every_s: float = Field(
        10.0,
        ge=0,
        description="how often a trial's latest checkpoints are copied "
        "into Tune's storage (run directories keep them all)",
    )

    @pydantic.field_validator("scheduler", mode="before")
    @classmethod
    def _scheduler_shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value not in SCHEDULERS:
                raise ValueError(
                    f"unknown scheduler '{value}'{did_you_mean(value, SCHEDULERS)}; "
                    f"expected one of: {', '.join(SCHEDULERS)}"
                )
            if value in ("pbt", "pb2"):
                raise ValueError(
                    f"{value} needs its perturbation_interval, e.g. scheduler: {{type: {value}, "
                    "perturbation_interval: 10}"
                )
            return {"type": value}
        return value


@dataclass(frozen=True)
class Dimension:
    key: str  # dotted param path
    kind: str  # one of DISTRIBUTIONS
    args: tuple  # values (choice, grid) or (low, high)


@dataclass(frozen=True)
class TuneConfig:
    section: TuneSection
    metric: str
    mode: str
    report: str
    dimensions: tuple[Dimension, ...]
    mutations: tuple[Dimension, ...] = ()  # PBT: what a perturbation mutates
    checkpoint_every: int | None = None  # PBT: the workload's checkpoint interval in steps, when it says


def _pydantic_error(err: pydantic.ValidationError, source: str, prefix: str) -> InputError:
    errors = err.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    found = invalid(err, source, model=TuneSection if len(first["loc"]) == 1 else None)
    # drop pydantic's union tags (scheduler.asha.max_t -> scheduler.max_t): they are not in the YAML
    parts = (found.field or "").split(".")
    parts = [p for i, p in enumerate(parts) if p and not (i and parts[i - 1] == "scheduler" and p in SCHEDULERS)]
    return InputError(found.message, source, ".".join([prefix, *parts]))


def _bound_error(model: type[BaseModel], key: str, value: Any, source: str, field: str) -> None:
    """Each bound or choice must itself be a valid value of the param: checked before any trial runs."""
    try:
        model.model_validate(nest({key: value}))
    except pydantic.ValidationError as err:
        first = err.errors()[0]
        raise InputError(f"{first['msg']} (got {value!r}): not a valid value of param '{key}'", source, field) from None


def dimension(
    model: type[BaseModel], key: str, dist: dict[str, Any], search: str, source: str, where: str | None = None
) -> Dimension:
    where = where or f"tune.space.{key}"
    if not param_path_exists(model, key):
        leaf = key.rsplit(".", 1)[-1]
        known = list(flatten(model().model_dump(mode="json")))
        raise InputError(
            f"no such param{did_you_mean(key, known) or did_you_mean(leaf, known)}; known: {', '.join(known)}",
            source,
            where,
        )
    if not isinstance(dist, dict) or len(dist) != 1:
        raise InputError(
            f"expected one distribution, e.g. {{uniform: [0.1, 1.0]}}; one of: {', '.join(DISTRIBUTIONS)}",
            source,
            where,
        )
    ((kind, args),) = dist.items()
    if kind not in DISTRIBUTIONS:
        raise InputError(
            f"unknown distribution '{kind}'{did_you_mean(str(kind), DISTRIBUTIONS)}; expected one of: "
            f"{', '.join(DISTRIBUTIONS)}",
            source,
            f"{where}.{kind}",
        )
    if not isinstance(args, list) or not args:
        raise InputError(
            f"expected a non-empty list of {'values' if kind in ('choice', 'grid') else '[low, high]'}",
            source,
            f"{where}.{kind}",
        )
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
        raise InputError(
            f"search: grid covers a grid exactly; '{kind}' is not a grid (use {{grid: [...]}} or search: random)",
            source,
            f"{where}.{kind}",
        )
    if search == "optuna" and kind == "grid":
        raise InputError(
            "optuna samples; it cannot cover a grid (use choice, or search: grid)", source, f"{where}.{kind}"
        )
    return Dimension(key, kind, tuple(args))


def check_section(spec: Spec) -> TuneSection:
    """The ``tune:`` section alone, as ``orch submit`` sees it: unknown keys and bad values are refused."""
    try:
        return TuneSection.model_validate(spec.tune)
    except pydantic.ValidationError as err:
        raise _pydantic_error(err, spec.source, "tune") from None


def parse_tune(spec: Spec) -> TuneConfig:
    """Validate the spec's ``tune:`` section against the workload: bad distributions, bounds or keys are
    InputErrors naming the file and the field path (exit 2, nothing started)."""
    source = spec.source
    if spec.tune is None:
        raise InputError(
            "no 'tune:' section: say what to search, e.g. tune: {space: {lr: {loguniform: [1e-4, 1e-1]}}}",
            source,
            "tune",
        )
    if spec.variants or spec.grid:
        field = "variants" if spec.variants else "grid"
        raise InputError(
            f"a sweep searches params + tune.space; '{field}' is for orch submit (put grid axes in "
            "tune.space as {grid: [...]})",
            source,
            field,
        )
    if spec.schedule:
        raise InputError(
            "a sweep starts from params; a schedule is what a PBT sweep's best.yaml replays with orch submit",
            source,
            "schedule",
        )
    section = check_section(spec)
    if not section.space:
        raise InputError("empty: name at least one param to search", source, "tune.space")
    if section.search == "optuna" and importlib.util.find_spec("optuna") is None:
        raise InputError(
            "search 'optuna' needs the optuna package: pip install optuna (or use random)", source, "tune.search"
        )
    if section.search == "grid" and (section.num_samples or 1) != 1:
        raise InputError(
            "grid search covers the grid exactly once; use seeds_per_trial for repeats", source, "tune.num_samples"
        )
    if spec.command:
        raise InputError(
            "orch tune runs Python workloads (its trials report to Ray in-process); a command spec "
            "can be swept with a 'grid:' and orch submit",
            source,
            "tune",
        )
    if spec.resources.world_size > 1:  # a trial is one process reporting to Ray: its ranks would never start
        raise InputError(
            f"orch tune runs each trial as one process; this spec asks for {spec.resources.world_size} tasks "
            "per run (resources.nodes x tasks_per_node): tune it on one task, then orch submit the best "
            "config on several",
            source,
            "resources",
        )
    assert spec.workload is not None  # a spec names a workload or a command
    workload = registry.get(spec.workload)
    from orchestrator.spec.spec import validate_params

    validate_params(workload.params_model, nest(spec.params), source, "params")
    dims = tuple(
        dimension(workload.params_model, key, dist, section.search, source) for key, dist in section.space.items()
    )
    metric = section.metric or (spec.metric.name if spec.metric else workload.metric)
    mode = section.mode or (spec.metric.mode if spec.metric else workload.mode)
    for field, name in (("tune.metric", metric), ("tune.report", section.report)):
        if name and workload.metrics and name not in workload.metrics:  # else every trial would fail on it
            raise InputError(
                f"workload '{spec.workload}' never reports '{name}'{did_you_mean(name, workload.metrics)}; "
                f"it reports: {', '.join(workload.metrics)}",
                source,
                field,
            )
    config = TuneConfig(section, metric, mode, section.report or metric, dims)
    if isinstance(section.scheduler, Pbt):
        from orchestrator.tune.pbt import check_pbt

        config = check_pbt(spec, config, workload)
    _check_budget(config, source)
    return config


def samples(config: TuneConfig) -> int:
    """Tune's num_samples: passes over the grid dimensions, each with fresh draws of the others. Default:
    one pass when every dimension is a grid, else 10 draws."""
    s = config.section
    if s.search == "grid" or all(d.kind == "grid" for d in config.dimensions):
        return s.num_samples or 1
    return s.num_samples or 10


def grid_points(config: TuneConfig) -> int:
    return math.prod(len(d.args) for d in config.dimensions if d.kind == "grid")


def _check_budget(config: TuneConfig, source: str) -> None:
    """The cap `orch submit` applies (``--max-runs``), on trials x seeds, before Ray starts."""
    from orchestrator.spec.spec import max_runs

    trials = samples(config) * grid_points(config)
    runs = trials * config.section.seeds_per_trial
    if runs > max_runs():
        field = (
            "tune.seeds_per_trial"
            if config.section.seeds_per_trial > max_runs()
            else "tune.space"
            if grid_points(config) > max_runs()
            else "tune.num_samples"
        )
        raise InputError(
            f"the sweep plans {trials:,} trials x {config.section.seeds_per_trial:,} seeds = {runs:,} runs, "
            f"more than the limit of {max_runs():,} (raise it with orch --max-runs N)",
            source,
            field,
        )


def param_space(config: TuneConfig) -> dict[str, Any]:
    from ray import tune

    makers = {
        "choice": lambda a: tune.choice(list(a)),
        "grid": lambda a: tune.grid_search(list(a)),
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(*a),
    }
    return {d.key: makers[d.kind](d.args) for d in config.dimensions}
