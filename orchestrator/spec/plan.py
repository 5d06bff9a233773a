"""Spec -> Runs. A Run is workload + fully resolved params + seed; its key is a content hash of what makes
it that run (``identity.py``: the params off their defaults, execution settings left out), so the same
experiment declared twice is the same run (Dora's idea), and resubmission reconciles."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from orchestrator.errors import InputError
from orchestrator.spec import identity, registry
from orchestrator.spec.identity import KEY_SCHEME
from orchestrator.spec.schedule import resolve as resolve_schedule
from orchestrator.spec.schedule import schedule_identity
from orchestrator.spec.spec import Spec, deep_merge, flatten, nest, param_path_exists, validate_params

BASE_VARIANT = "base"


def content_hash(payload: Any, length: int = 12) -> str:
    """Stable across processes, Python versions and dict order (sorted keys, canonical JSON)."""
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@dataclass(frozen=True)
class Run:
    workload: str
    params: dict[str, Any]  # resolved: defaults + spec + variant + grid point, nested
    seed: int
    variant: str
    grid_point: dict[str, Any] = field(default_factory=dict)
    index: int = 0  # seed index i: seed = base + i
    command: tuple[str, ...] = ()  # a command workload's argv template: part of what the run is
    # flat params that make the run what it is (identity.split: off their defaults, no execution settings);
    # None: every param (a Run made by hand)
    identity: dict[str, Any] | None = None
    defaulted: dict[str, Any] = field(default_factory=dict)  # flat params left at their default (orch.defaults)
    schedule: list[dict[str, Any]] = field(default_factory=list)  # phases: params from a step on (spec/schedule.py)

    def _identity(self) -> dict[str, Any]:
        params = self.identity if self.identity is not None else flatten(self.params)
        return {
            "scheme": KEY_SCHEME,
            "workload": self.workload,
            "params": params,
            **({"command": list(self.command)} if self.command else {}),
            **({"schedule": schedule_identity(self.schedule)} if self.schedule else {}),
        }

    def _legacy_identity(self) -> dict[str, Any]:
        """Key scheme 1: every resolved param, nested (stores written before scheme 2; rekey.py)."""
        return {
            "workload": self.workload,
            "params": self.params,
            **({"command": list(self.command)} if self.command else {}),
        }

    @property
    def group(self) -> str:
        return content_hash(self._identity())

    @property
    def key(self) -> str:
        return content_hash({**self._identity(), "seed": self.seed})

    @property
    def legacy_group(self) -> str:
        return content_hash(self._legacy_identity())

    @property
    def legacy_key(self) -> str:
        return content_hash({**self._legacy_identity(), "seed": self.seed})

    @property
    def label(self) -> str:
        point = ",".join(f"{k}={v}" for k, v in self.grid_point.items())
        return f"{self.variant}[{point}]" if point else self.variant

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def grid_points(spec: Spec, params_model) -> list[dict[str, Any]]:
    for key, values in spec.grid.items():
        if not spec.command and not param_path_exists(params_model, key):  # a command's params are free-form
            raise InputError(
                f"grid key '{key}' is not a param of workload '{spec.workload}'", spec.source, f"grid.{key}"
            )
        if not values:
            raise InputError("empty list: a grid axis needs at least one value", spec.source, f"grid.{key}")
    keys = list(spec.grid)
    return [dict(zip(keys, combo, strict=False)) for combo in itertools.product(*(spec.grid[k] for k in keys))] or [{}]


def expand(spec: Spec) -> list[Run]:
    """variants x grid points x seeds, every combination validated against the workload's Params."""
    workload = registry.for_spec(spec)
    model = workload.params_model
    base = nest(spec.params)
    validate_params(model, base, spec.source, "params")
    variants = spec.variants or {BASE_VARIANT: {}}
    points = grid_points(spec, model)

    resolved_variants: dict[str, dict[str, Any]] = {}
    seen: dict[str, str] = {}
    for name, overrides in variants.items():
        merged = deep_merge(base, nest(overrides))
        params = validate_params(model, merged, spec.source, f"variants.{name}").model_dump(mode="json")
        fingerprint = content_hash(identity.split(params, model, spec.identity_exclude)[0])
        if fingerprint in seen:
            raise InputError(
                f"resolves to the same params as variant '{seen[fingerprint]}' (execution settings "
                "aside): two names for one experiment",
                spec.source,
                f"variants.{name}",
            )
        seen[fingerprint] = name
        resolved_variants[name] = merged

    runs = []
    for name, merged in resolved_variants.items():
        for point in points:
            tree = deep_merge(merged, nest(point))
            field_path = "grid." + ",".join(point) if point else f"variants.{name}"
            params = validate_params(model, tree, spec.source, field_path).model_dump(mode="json")
            ident, defaulted = identity.split(params, model, spec.identity_exclude)
            phases = resolve_schedule(spec, model, params)
            for i in range(spec.seeds.count):
                runs.append(
                    Run(
                        workload.name,
                        params,
                        spec.seeds.base + i,
                        name,
                        point,
                        i,
                        workload.command,
                        ident,
                        defaulted,
                        phases,
                    )
                )
    return runs


def flat_params(run: Run) -> dict[str, Any]:
    return flatten(run.params)
