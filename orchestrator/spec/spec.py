"""The YAML spec: load safely, apply CLI overrides, validate. Nothing here touches MLflow or the disk
beyond reading the file, so a bad spec is rejected before anything exists."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from orchestrator.errors import InputError, did_you_mean, invalid
from orchestrator.spec import backends, loading, registry
from orchestrator.spec.tracking_uri import check_tracking_uri

MAX_RUNS = 10_000  # one submission's planned runs; more is almost always a typo (seeds: 1000000000)
MAX_RUNS_ENV = "ORCH_MAX_RUNS"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Seeds(Strict):
    count: int = Field(1, gt=0)
    base: int = Field(0, ge=0)


class Resources(Strict):
    """What one run asks for. A run is one process unless it spans ``nodes`` x ``tasks_per_node`` processes
    (ranks of one torch.distributed group, docs/distributed.md); ``cpus`` and ``mem_gb`` are then per task.
    The task layout is an execution setting: it is not part of the run key (spec/identity.py)."""

    cpus: int = Field(1, gt=0, description="CPU cores per run, or per task (also its torch/BLAS thread count)")
    gpus: float = Field(0, ge=0, description="GPUs per run; a fraction (0.25) shares one GPU between runs")
    nodes: int = Field(1, gt=0, description="nodes one run spans (a multi-task run, torch.distributed)")
    gpus_per_node: int = Field(
        0, ge=0, description="GPUs per node of a multi-task run (each task gets gpus_per_node / tasks_per_node)"
    )
    tasks_per_node: int | None = Field(
        None, gt=0, description="processes (ranks) per node; default: gpus_per_node, or 1 without GPUs"
    )
    mem_gb: float = Field(4.0, gt=0)
    time_min: int = Field(60, gt=0)
    runs_per_job: int = Field(
        1,
        gt=0,
        description="runs packed into one scheduler job (Slurm array task, Ray "
        "task), running at once on its cores and GPUs",
    )
    runs_per_gpu: int = Field(1, gt=0, description="packed runs sharing one GPU: each gets gpus/runs_per_gpu of it")

    @pydantic.model_validator(mode="after")
    def _task_layout(self) -> Resources:
        if self.tasks_per_node is None:
            self.tasks_per_node = self.gpus_per_node or 1
        if self.gpus_per_node and self.gpus:
            raise ValueError(
                f"gpus ({self.gpus:g}, one process's GPUs) and gpus_per_node ({self.gpus_per_node}, a multi-task "
                "run's) both set: give one of them"
            )
        if self.gpus_per_node and self.gpus_per_node % self.tasks_per_node:
            raise ValueError(
                f"tasks_per_node ({self.tasks_per_node}) must divide gpus_per_node ({self.gpus_per_node}): each "
                "task gets its own GPU(s), and NCCL refuses two ranks on one GPU"
            )
        if self.world_size > 1 and self.runs_per_job > 1:
            raise ValueError(
                f"runs_per_job ({self.runs_per_job}) packs several one-process runs into one job; a multi-task run "
                f"(nodes {self.nodes} x tasks_per_node {self.tasks_per_node}) is a job of its own: set one of them"
            )
        return self

    @property
    def layout(self) -> int:
        """tasks_per_node, resolved (never None once validated)."""
        return self.tasks_per_node or 1

    @property
    def world_size(self) -> int:
        """The run's processes: nodes x tasks_per_node (1: an ordinary one-process run)."""
        return self.nodes * self.layout

    @property
    def task_gpus(self) -> float:
        """GPUs each process of the run gets."""
        return self.gpus_per_node / self.layout if self.gpus_per_node else self.gpus


class Tracking(Strict):
    uri: str | None = None
    system_metrics_s: float = Field(
        10.0, ge=0, description="seconds between samples of each run's CPU, memory and GPUs (system/* metrics); 0: off"
    )
    stall_after_s: float | None = Field(
        None, gt=0, description="a running run silent this long is STALLED (default: 10x its usual gap, >= 5 min)"
    )

    _usable = pydantic.field_validator("uri")(check_tracking_uri)


class Notify(Strict):
    """Where to say that a run failed or stalled, or that a submission's runs all ended (tracking/notify.py)."""

    webhook: str | None = Field(None, description="an http(s) URL: the event is POSTed to it as JSON")
    command: list[str] | None = Field(None, description="argv run with the event's JSON on stdin (no shell)")
    on: list[Literal["failure", "stall", "end"]] = Field(["failure", "stall", "end"], min_length=1)

    @pydantic.field_validator("webhook")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, got '{value}'")
        return value

    @pydantic.field_validator("command")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or not value[0].strip()):
            raise ValueError("expected [executable, arg, ...] with an executable")
        return value

    @pydantic.model_validator(mode="after")
    def _somewhere(self) -> Notify:
        if self.webhook is None and self.command is None:
            raise ValueError("notify: needs a webhook or a command (or both)")
        return self


class TuningBudget(Strict):
    trials: int = Field(ge=0, le=10**9, description="configurations tried to choose these params (0: set by hand)")
    sweep: str | None = Field(None, max_length=500, description="the sweep that chose them (orch tune's name)")


class Tuning(TuningBudget):
    """How hard the params were searched for, recorded on each group so that `orch compare` can say when a
    baseline got less tuning than what it is compared with (orch tune writes it into best.yaml)."""

    variants: dict[str, TuningBudget] = Field({}, description="a variant chosen with another budget")


class MetricSpec(Strict):
    name: str
    mode: Literal["min", "max"] = "min"


class Spec(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", description="MLflow experiment name")
    workload: str | None = Field(None, description="a built-in name, an orch.workloads entry point or an import path")
    command: list[str] | None = Field(
        None,
        description="an executable and its arguments, run instead of a workload; "
        "'{param}' and '{seed}' are substituted (job/command.py)",
    )
    snapshot: bool = Field(True, description="jobs run a copy of the workload's code taken at submit (job/snapshot.py)")
    params: dict[str, Any] = {}
    seeds: Seeds = Seeds()
    variants: dict[str, dict[str, Any]] = {}
    grid: dict[str, list[Any]] = {}
    identity_exclude: list[str] = Field(
        [],
        description="param paths that cannot change a result (threads, devices, "
        "caches, intervals): left out of the run key, so changing one reruns nothing",
    )
    resources: Resources = Resources()
    backend: str = Field("local", description="where the runs execute (orchestrator/spec/backends.py)")
    cluster: str | None = Field(None, description="cluster profile name (cluster/<name>.yaml)")
    slurm: dict[str, Any] = Field(
        {},
        description="cluster profile fields for this spec only, merged over the "
        "profile (validated by the profile schema)",
    )
    tracking: Tracking = Tracking()
    workdir: str = Field("mlruns/jobs", description="root of the run directories (shared filesystem on a cluster)")
    metric: MetricSpec | None = None
    notify: Notify | None = None
    tuning: Tuning | None = None
    tune: dict[str, Any] | None = None
    schedule: list[Any] = Field(
        [], description="phases [{step, params}]: params that change from a step on (spec/schedule.py)"
    )

    # Not the user's to write (refused in a spec, INTERNAL): where it came from, for errors and MLflow, and
    # the fields --set / --cluster gave (a backend may refuse one: local refuses --cluster)
    source: str = Field("<spec>", exclude=True)
    set_paths: list[str] = Field([], exclude=True)

    @pydantic.field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        message = backends.unknown(value)
        if message is not None:
            raise ValueError(message)
        return value

    @pydantic.model_validator(mode="after")
    def _tuned_variants_exist(self) -> Spec:
        unknown = sorted(set(self.tuning.variants) - set(self.variants)) if self.tuning else []
        if unknown:
            known = ", ".join(self.variants) or "none"
            raise ValueError(
                f"tuning.variants names {', '.join(unknown)}: not a variant of this spec (variants: {known})"
            )
        return self

    @pydantic.model_validator(mode="after")
    def _schedule_on_one_task(self) -> Spec:
        if self.schedule and self.resources.world_size > 1:  # job/phases.py switches on rank 0's checkpoints only
            raise ValueError(
                "a 'schedule' (a PBT sweep's replay) runs on one task; this spec asks for "
                f"{self.resources.world_size} (resources.nodes x tasks_per_node)"
            )
        return self

    def tuning_of(self, variant: str) -> TuningBudget | None:
        """The budget that chose ``variant``'s params, if the spec says."""
        if self.tuning is None:
            return None
        return self.tuning.variants.get(variant, self.tuning)

    @pydantic.model_validator(mode="after")
    def _workload_or_command(self) -> Spec:
        if (self.workload is None) == (self.command is None):
            raise ValueError("expected exactly one of 'workload' (a Python workload) and 'command' (an executable)")
        if self.command is not None:
            if not self.command or not all(isinstance(arg, str) and arg for arg in self.command):
                raise ValueError(
                    "'command' must be a non-empty list of non-empty strings, e.g. [python, train.py, --lr, '{lr}']"
                )
            if self.metric is None:
                raise ValueError(
                    "a 'command' spec needs 'metric: {name: ..., mode: min|max}': orch cannot know "
                    "which of the command's metrics is the main one"
                )
        return self

    @pydantic.field_validator("seeds", mode="before")
    @classmethod
    def _seeds_shorthand(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"count": value}
        if not isinstance(value, dict):  # pydantic would only say "a valid dictionary": name the shorthand too
            raise ValueError(
                f"expected a positive integer (the number of seeds) or a mapping {{count, base}}, got {value!r}"
            )
        return value

    # The name becomes a directory (workdir/<name>/<key>) and an MLflow experiment; the workdir is created
    # at submit: both are checked here, before the store or any run exists (orchestrator/spec/loading.py).
    _name_usable = pydantic.field_validator("name")(loading.check_name)
    _workdir_usable = pydantic.field_validator("workdir")(loading.check_workdir)


def load_yaml(path: Path) -> dict[str, Any]:
    """Safe-load one YAML mapping: bounded, UTF-8, no tags, no duplicate keys, no alias bombs, no NaN
    (orchestrator/spec/loading.py)."""
    return loading.load_mapping(path)


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'model.n_layer': 3} -> {'model': {'n_layer': 3}}; nested mappings pass through and merge."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"'{key}' sets inside '{part}', which is not a mapping")
        leaf = parts[-1]
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf] = deep_merge(node[leaf], nest(value))
        else:
            node[leaf] = nest(value) if isinstance(value, dict) else value
    return out


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


def check_param_keys(model: type[BaseModel], tree: dict[str, Any], source: str, field: str) -> None:
    """Unknown keys named with their full path and a suggestion (pydantic's message has neither)."""
    if model.model_config.get("extra") == "allow":  # a command's free-form params
        return
    for key, value in tree.items():
        fields = model.model_fields
        if key not in fields:
            raise InputError(
                f"unknown param '{key}'{did_you_mean(key, fields)}; known: {', '.join(fields)}",
                source,
                f"{field}.{key}",
            )
        annotation = fields[key].annotation
        if isinstance(value, dict) and isinstance(annotation, type) and issubclass(annotation, BaseModel):
            check_param_keys(annotation, value, source, f"{field}.{key}")


def param_path_exists(model: type[BaseModel], dotted: str) -> bool:
    node: Any = model
    for part in dotted.split("."):
        if not (isinstance(node, type) and issubclass(node, BaseModel)) or part not in node.model_fields:
            return False
        node = node.model_fields[part].annotation
    return True


def validate_params(model: type[BaseModel], tree: dict[str, Any], source: str, field: str) -> BaseModel:
    check_param_keys(model, tree, source, field)
    try:
        params = model.model_validate(tree)
    except pydantic.ValidationError as err:
        raise invalid(err, source, field) from None
    # after validation too: pydantic reads the string '1e400' (YAML has no exponent without a sign) as inf
    loading.reject_non_finite(params.model_dump(), source, field)
    return params


INTERNAL = ("source", "set_paths")  # Spec fields orch fills in, never read from a spec


def apply_sets(doc: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """``--set a.b=value``: a spec field path (``resources.cpus=2``) or a param path (``steps=10``,
    ``params.steps=10``). Values are YAML-typed. Param paths are checked once the workload is known."""
    doc = copy.deepcopy(doc)
    top_level = set(Spec.model_fields) - set(INTERNAL)
    for item in sets:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise InputError(f"expected KEY=VALUE, got '{item}'", "--set")
        key, raw = (part.strip() for part in item.split("=", 1))
        value = loading.load_value(raw, "--set", key) if raw else None
        parts = key.split(".")
        if parts[0] not in top_level:
            parts = ["params", *parts]
        node = doc
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"'{part}' is not a mapping", "--set", key)
        node[parts[-1]] = value
        doc.setdefault("_sets", []).append(".".join(parts))
    return doc


def format_validation_error(err: pydantic.ValidationError, source: str) -> InputError:
    return invalid(err, source, model=Spec, hidden=INTERNAL)


def load_spec(
    path: str | Path, sets: list[str] | None = None, seeds: int | None = None, backend: str | None = None
) -> Spec:
    """Read, override and validate a spec. Params are checked against the workload's ``Params``."""
    path = Path(path)
    source = str(path)
    doc = apply_sets(load_yaml(path), sets or [])
    set_paths = doc.pop("_sets", [])
    if seeds is not None:
        if seeds <= 0:
            raise InputError(f"expected a positive number of seeds, got {seeds}", "--seeds")
        base = doc.get("seeds", {}).get("base", 0) if isinstance(doc.get("seeds"), dict) else 0
        doc["seeds"] = {"count": seeds, "base": base}
    if backend is not None:
        backends.check(backend, "--backend")
        doc["backend"] = backend
    for key in INTERNAL:
        if key in doc:
            known = [f for f in Spec.model_fields if f not in INTERNAL]
            raise InputError(f"unknown field; expected one of: {', '.join(known)}", source, key)
    try:
        spec = Spec.model_validate(doc)
    except pydantic.ValidationError as err:
        raise blame_sets(format_validation_error(err, source), set_paths) from None
    spec.source = source
    loading.reject_non_finite(spec.model_dump(exclude={"params", "variants", "grid", "tune"}), source)
    check_plan_size(spec, source)
    spec.set_paths = set_paths
    try:
        workload = registry.for_spec(spec)
    except InputError as err:
        raise InputError(err.message, source, "workload") from None
    if spec.metric is not None and workload.metrics and spec.metric.name not in workload.metrics:
        raise InputError(
            f"workload '{spec.workload}' never reports '{spec.metric.name}'"
            f"{did_you_mean(spec.metric.name, workload.metrics)}; it reports: "
            f"{', '.join(workload.metrics)}",
            source,
            "metric.name",
        )
    if spec.command:
        from orchestrator.spec.placeholders import check_command

        check_command(spec, source)
        return spec
    for n, path in enumerate(spec.identity_exclude):
        if not param_path_exists(workload.params_model, path):
            raise InputError(
                f"'{path}' is not a param of workload '{spec.workload}'"
                f"{did_you_mean(path, workload.params_model.model_fields)}",
                source,
                f"identity_exclude[{n}]",
            )
    for dotted in set_paths:
        if dotted.startswith("params.") and not param_path_exists(workload.params_model, dotted[len("params.") :]):
            leaf = dotted.rsplit(".", 1)[-1]
            raise InputError(
                f"no such param in workload '{spec.workload}'{did_you_mean(leaf, workload.params_model.model_fields)}",
                "--set",
                dotted,
            )
    if set_paths:  # a bad --set value is the command line's fault, not the file's: check it here, blamed there
        try:
            validate_params(workload.params_model, nest(spec.params), source, "params")
        except InputError as err:
            raise blame_sets(err, set_paths) from None
    return spec


# -- checks before anything exists ---------------------------------------------------------------------
def blame_sets(err: InputError, set_paths: list[str]) -> InputError:
    """An error at a field that ``--set`` wrote names ``--set`` as its source."""
    field = err.field or ""
    if any(field == p or field.startswith(p + ".") or p.startswith(field + ".") for p in set_paths):
        return InputError(err.message, "--set", field)
    return err


def planned_runs(spec: Spec) -> int:
    """variants x grid points x seeds, counted without building them (a 10^7-point grid is refused in
    microseconds, not after minutes of expansion)."""
    count = max(1, len(spec.variants)) * spec.seeds.count
    for values in spec.grid.values():
        count *= max(1, len(values))
    return count


max_runs_flag: int | None = None  # `orch --max-runs N` (options.py)


def max_runs() -> int:
    if max_runs_flag is not None:
        return max_runs_flag
    raw = os.environ.get(MAX_RUNS_ENV, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else MAX_RUNS


def check_plan_size(spec: Spec, source: str) -> None:
    count, limit = planned_runs(spec), max_runs()
    if count > limit:
        raise InputError(
            f"plans {count:,} runs (variants x grid points x seeds), over the limit of {limit:,}; "
            f"raise it with `orch --max-runs N submit ...` (or {MAX_RUNS_ENV}=N) if you mean it",
            source,
            "seeds",
        )
