"""Workloads by name. A workload is a package ``workloads.<name>`` exposing ``Params`` (pydantic model
whose defaults are the small CPU setting), ``run(params, ctx) -> dict[str, float]`` and ``METRIC``
(name of the main final metric) with ``MODE`` ("min" or "max"). Discovered, not listed, so adding a
workload touches no shared file; imported only when used (some pull in torch or transformers)."""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from types import ModuleType

import pydantic

import workloads
from orchestrator.errors import InputError, did_you_mean


@dataclass(frozen=True)
class Workload:
    name: str
    module: ModuleType

    @property
    def params_model(self) -> type[pydantic.BaseModel]:
        return self.module.Params

    @property
    def metric(self) -> str:
        return self.module.METRIC

    @property
    def mode(self) -> str:
        return getattr(self.module, "MODE", "min")

    def run(self, params: pydantic.BaseModel, ctx) -> dict[str, float]:
        return self.module.run(params, ctx)


def available() -> list[str]:
    """Names of the packages under ``workloads/`` that define a workload (checked without importing)."""
    names = []
    for info in pkgutil.iter_modules(workloads.__path__):
        if info.ispkg and not info.name.startswith("_") and info.name not in workloads.NOT_WORKLOADS:
            names.append(info.name)
    return sorted(names)


def get(name: str) -> Workload:
    known = available()
    if name not in known:
        raise InputError(f"unknown workload '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}")
    module = importlib.import_module(f"workloads.{name}")
    for attr in ("Params", "run", "METRIC"):
        if not hasattr(module, attr):
            raise TypeError(f"workloads.{name} does not define {attr}: not a workload")
    return Workload(name, module)
