"""Population Based Training in ``orch tune`` (``scheduler: {type: pbt, perturbation_interval: N}``): the spec's
checks before Ray starts, and Ray's ``PopulationBasedTraining`` as orch sets it up.

The checkpoint contract, enforced here rather than discovered mid-sweep (ray#27170, ray#53831, ray#9036): a
trial can only be exploited at a step it checkpointed, so

- the workload says it checkpoints: its module declares ``CHECKPOINT_EVERY``, the ``Params`` field that holds
  its checkpoint interval in steps (``"checkpoint_every"``), or that interval as an int; a workload without
  it is refused (its run() must save with ``ctx.save_checkpoint`` and resume with ``ctx.load_checkpoint``);
- ``perturbation_interval`` is a multiple of that interval, and the interval is neither searched nor mutated;
- PBT's clock is orch's, not Tune's iteration count: ``TIME_KEY``, the steps done at the trial's latest
  checkpoint (its journaled step + 1), so a perturbation always falls on a report that carries a checkpoint
  (``trial.PbtReporter``), and an exploited trial restarts from exactly the donor's checkpointed step.

A trial runs one seed (``seeds_per_trial: 1``): the seeds of one trial would checkpoint different steps.
The schedule a trial ends with is validated over fresh seeds by ``orch submit best.yaml --seeds N``."""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

from orchestrator.errors import InputError
from orchestrator.spec.registry import Workload
from orchestrator.spec.spec import Spec, flatten, nest, param_path_exists, validate_params
from orchestrator.tune.section import CHECKPOINT_DECLARATION, TIME_KEY, Dimension, Pb2, Pbt, TuneConfig, dimension


def check_pbt(spec: Spec, config: TuneConfig, workload: Workload) -> TuneConfig:
    """The PBT settings against the workload, before Ray starts: the config with its mutations and the
    workload's checkpoint interval resolved."""
    section, source = config.section, spec.source
    pbt = section.scheduler
    assert isinstance(pbt, Pbt)
    if section.search == "optuna":
        raise InputError(
            "PBT evolves its population itself: it takes random or grid search for the first generation, not a "
            "searcher (use search: random)",
            source,
            "tune.search",
        )
    if section.seeds_per_trial != 1:
        raise InputError(
            "PBT restarts a trial from another's checkpoint, and a trial's seeds checkpoint different steps: "
            "use seeds_per_trial: 1, then validate the winning schedule over seeds (orch submit best.yaml "
            "--seeds N)",
            source,
            "tune.seeds_per_trial",
        )
    model = workload.params_model
    if pbt.mutations is None:
        mutations = config.dimensions  # the sweep's space is the mutation space
    elif not pbt.mutations:
        raise InputError(
            "empty: name at least one param to mutate, or leave mutations out (the space is mutated)",
            source,
            "tune.scheduler.mutations",
        )
    else:
        mutations = tuple(
            dimension(model, key, dist, "random", source, f"tune.scheduler.mutations.{key}")
            for key, dist in pbt.mutations.items()
        )
    if isinstance(pbt, Pb2):
        field = "tune.scheduler.mutations" if pbt.mutations else "tune.space"
        for dim in mutations:
            if dim.kind not in CONTINUOUS:
                raise InputError(
                    f"pb2's bandit searches a range: give '{dim.key}' uniform, loguniform or randint bounds, not "
                    f"{dim.kind} (or use type: pbt)",
                    source,
                    f"{field}.{dim.key}",
                )
    every = _checkpoint_interval(spec, workload, config, mutations)
    if pbt.perturbation_interval % every:
        raise InputError(
            f"must be a multiple of the workload's checkpoint interval ({every} steps): a trial is exploited "
            f"at a step it checkpointed (e.g. {every * max(1, round(pbt.perturbation_interval / every))})",
            source,
            "tune.scheduler.perturbation_interval",
        )
    return dataclasses.replace(config, mutations=tuple(mutations), checkpoint_every=every)


def _checkpoint_interval(spec: Spec, workload: Workload, config: TuneConfig, mutations: tuple[Dimension, ...]) -> int:
    """The steps between the workload's checkpoints, from its ``CHECKPOINT_EVERY`` declaration."""
    source, model = spec.source, workload.params_model
    module = importlib.import_module(workload.import_path)
    declared = getattr(module, CHECKPOINT_DECLARATION, None)
    if declared is None:
        raise InputError(
            f"PBT restarts trials from one another's checkpoints, and workload '{spec.workload}' does not say "
            f"it checkpoints: its run() must save with ctx.save_checkpoint and resume with ctx.load_checkpoint, "
            f"and its module declare {CHECKPOINT_DECLARATION} (the Params field holding its checkpoint "
            f'interval in steps, e.g. {CHECKPOINT_DECLARATION} = "checkpoint_every", or that interval as an int)',
            source,
            "tune.scheduler",
        )
    if isinstance(declared, int) and not isinstance(declared, bool):
        if declared < 1:
            raise InputError(f"workload '{spec.workload}': {CHECKPOINT_DECLARATION} must be >= 1, got {declared}")
        return declared
    if not (isinstance(declared, str) and param_path_exists(model, declared)):
        raise InputError(
            f"workload '{spec.workload}': {CHECKPOINT_DECLARATION} must name a field of its Params or be an "
            f"int, got {declared!r}"
        )
    for dim, section in [(d, "space") for d in config.dimensions] + [(d, "scheduler.mutations") for d in mutations]:
        if dim.key == declared:
            raise InputError(
                f"'{declared}' is the workload's checkpoint interval: PBT needs it fixed (set it in params)",
                source,
                f"tune.{section}.{declared}",
            )
    params = validate_params(model, nest(spec.params), source, "params").model_dump(mode="json")
    value = flatten(params)[declared]
    if not isinstance(value, int) or value < 1:
        raise InputError(
            f"the checkpoint interval must be a whole number of steps >= 1, got {value!r}", source, f"params.{declared}"
        )
    return value


def mutation_space(mutations: tuple[Dimension, ...]) -> dict[str, Any]:
    """Ray's ``hyperparam_mutations``: a list is shifted to a neighbour, a distribution resampled or scaled."""
    from ray import tune

    makers = {
        "choice": list,
        "grid": list,
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(*a),
    }
    return {d.key: makers[d.kind](d.args) for d in mutations}


@dataclasses.dataclass(frozen=True)
class KeepInBounds:
    """Ray scales a numeric value by a perturbation factor with no regard to its bounds (0.9 * 1.2 leaves
    uniform(0, 1)): the value is brought back within them, so a mutated trial is a valid trial. Picklable:
    Tune saves the scheduler with the experiment."""

    bounds: tuple[tuple[str, str, float, float], ...]  # (key, kind, low, high)

    def __call__(self, config: dict[str, Any]) -> dict[str, Any]:
        for key, kind, low, high in self.bounds:
            if key in config and isinstance(config[key], int | float):
                top = high - 1 if kind == "randint" else high
                value = min(max(config[key], low), top)
                config[key] = int(value) if kind == "randint" else float(value)
        return config


CONTINUOUS = ("uniform", "loguniform", "randint")


def scheduler(config: TuneConfig):
    from ray.tune.schedulers import PopulationBasedTraining

    pbt = config.section.scheduler
    assert isinstance(pbt, Pbt)
    bounds = tuple((d.key, d.kind, *d.args) for d in config.mutations if d.kind in CONTINUOUS)
    if isinstance(pbt, Pb2):
        from ray.tune.schedulers.pb2 import PB2

        return PB2(
            time_attr=TIME_KEY,
            perturbation_interval=pbt.perturbation_interval,
            # the bandit's box; a loguniform range is searched linearly, as Ray's PB2 does
            hyperparam_bounds={key: [low, high - 1 if kind == "randint" else high] for key, kind, low, high in bounds},
            quantile_fraction=pbt.quantile_fraction,
            custom_explore_fn=KeepInBounds(bounds),
            require_attrs=False,
        )
    return PopulationBasedTraining(
        time_attr=TIME_KEY,
        perturbation_interval=pbt.perturbation_interval,
        burn_in_period=pbt.burn_in_period,
        hyperparam_mutations=mutation_space(config.mutations),
        quantile_fraction=pbt.quantile_fraction,
        resample_probability=pbt.resample_probability,
        perturbation_factors=pbt.perturbation_factors,
        custom_explore_fn=KeepInBounds(bounds),
        # a report without the scheduler's metric (eval every k steps) is passed over, not an error
        require_attrs=False,
    )
