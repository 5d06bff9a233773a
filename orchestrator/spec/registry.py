"""Workloads: what a spec's ``workload:`` (or ``command:``) names, resolved to one ``Workload``.

A Python workload is any importable module exposing ``Params`` (a pydantic model whose defaults are the
small CPU setting), ``run(params, ctx) -> dict[str, float]`` and ``METRIC`` (the main final metric), with
an optional ``MODE`` ("min" or "max"). The spec names it, in this order of lookup:

1. a name an installed package registers in the ``orch.workloads`` entry-point group
   (``[project.entry-points."orch.workloads"] mytask = "mylab.train"``): the lab's workloads shipped with
   orch (``workload: smoke``) register there too, so the core never imports them; a name orch's own
   distribution registers wins over another package's;
2. an import path (``workload: mylab.train``), found from the directory orch runs in or installed.

A module may also declare ``METRICS``, every metric name it can report: a spec's ``metric:`` is then
checked against it before anything runs; ``CHANCE``, metric name -> the value a random guess scores, which
``orch compare`` marks so that a group at chance is seen as such; and ``PACKAGES``, the distributions whose
versions each run records (beside orch's own, ``tracking/codeversion.py``).

A ``command:`` spec runs an executable instead (``job/command.py``); its params are free-form.
Modules are imported only when used (some pull in torch or transformers)."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pydantic

from orchestrator.errors import InputError, did_you_mean

if TYPE_CHECKING:
    from orchestrator.job.runjson import RunJob  # type only: spec/ sits below job/

ENTRY_POINTS = "orch.workloads"
OWN_DISTRIBUTION = "orch"
COMMAND = "command"  # the workload name of every `command:` spec (the command itself is part of the run key)


class CommandParams(pydantic.BaseModel):
    """A command's params: free-form, typed by YAML (nothing to validate them against)."""

    model_config = pydantic.ConfigDict(extra="allow")


@dataclass(frozen=True)
class Workload:
    name: str  # as the spec names it
    import_path: str  # the module a job imports ("" for a command)
    params_model: type[pydantic.BaseModel]
    metric: str
    mode: str
    runner: Callable[[pydantic.BaseModel, Any], dict[str, float]] | None  # a Python workload's run()
    source_root: Path | None  # the tree a submission snapshots (None: an installed package)
    command: tuple[str, ...] = ()  # a command workload's argv template (job/command.py runs it)
    metrics: tuple[str, ...] = ()  # every metric it can report, when it declares them (METRICS)
    chance: tuple[tuple[str, float], ...] = ()  # (metric, level a random guess scores), when declared (CHANCE)
    packages: tuple[str, ...] = ()  # distributions whose versions a run records (PACKAGES)


def available() -> list[str]:
    """Every registered name (no workload is imported)."""
    return sorted(registered())


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    """The group's entry points, orch's own distribution's last, so that they win a name both register."""
    found = importlib.metadata.entry_points(group=ENTRY_POINTS)
    return sorted(found, key=lambda ep: ep.dist is not None and ep.dist.name == OWN_DISTRIBUTION)


def registered() -> dict[str, str]:
    """Entry-point name -> module path, from every installed package that declares ``orch.workloads``."""
    return {ep.name: ep.value.split(":")[0] for ep in _entry_points()}


def _shipped_with_orch(name: str) -> bool:
    """orch's own: the import probe (``_probe_import``) is for a lab's modules."""
    return any(ep.name == name and ep.dist is not None and ep.dist.name == OWN_DISTRIBUTION for ep in _entry_points())


def import_path_of(name: str) -> str:
    """The module a workload name stands for (no import yet)."""
    return registered().get(name, name)


def _importable_from_cwd() -> None:
    """`orch` is a console script: its sys.path starts with the script's directory, not the directory the
    user runs it from, where their package lives. Python's own `python -m` puts the cwd first; so do we,
    last in the lookup order so a local file never shadows an installed library."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)


IMPORT_TIMEOUT_ENV = "ORCH_IMPORT_TIMEOUT_S"


def _probe_import(name: str, path: str) -> None:
    """A lab's module is imported once in a child first: one that ends its process (``os._exit(0)`` would be
    a false success, nothing submitted) or never returns (a loop, a blocking read) is reported instead of
    taking orch with it. Costs one import of the module; built-in workloads are orch's own and skip it."""
    raw = os.environ.get(IMPORT_TIMEOUT_ENV, "120")
    try:
        timeout = float(raw)
    except ValueError:
        timeout = math.nan
    if not 0 < timeout < math.inf:
        raise InputError(f"{IMPORT_TIMEOUT_ENV}: expected a number of seconds above 0, got {raw!r}", IMPORT_TIMEOUT_ENV)
    code = (
        "import importlib, sys\n"  # an exception (sys.exit included) is reported by the import in orch
        "try:\n    importlib.import_module(sys.argv[1])\n"
        "except BaseException:\n    pass\n"
        "print('orch-import-returned', flush=True)\n"
    )
    try:
        result = subprocess.run(
            [sys.executable, "-c", code, path],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=os.getcwd(),
            env={**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise InputError(
            f"workload '{name}': importing {path} did not return within {timeout:g} s (code that "
            f"runs at import? set {IMPORT_TIMEOUT_ENV} for a slow one)"
        ) from None
    if "orch-import-returned" not in result.stdout:
        last = result.stderr.strip().splitlines()[-1:] or [""]
        raise InputError(
            f"workload '{name}': importing {path} ended its process (status {result.returncode}, "
            f"os._exit or a signal){': ' + last[0] if last[0] else ''}; a module must not exit when "
            "imported"
        )


def get(name: str, probe: bool = True) -> Workload:
    """The Python workload a spec names; an InputError (the name, what was expected) when there is none.
    ``probe``: import a lab's module in a child first (`_probe_import`); jobs, which run what a submission
    already probed, skip it."""
    path = import_path_of(name)
    _importable_from_cwd()
    try:
        found = importlib.util.find_spec(path)
    except (ImportError, ValueError):  # a parent package that does not exist, or an empty/relative name
        found = None
    if found is None:
        known = available()
        raise InputError(
            f"unknown workload '{name}'{did_you_mean(name, known)}: not an installed workload "
            f"({', '.join(known)}: '{ENTRY_POINTS}' entry points), and no module '{path}' importable "
            f"from {os.getcwd()}"
        )
    if probe and path not in sys.modules and not _shipped_with_orch(name):
        _probe_import(name, path)
    try:
        module = importlib.import_module(path)
    except SystemExit as err:  # the module's code called sys.exit: orch would exit with its code, silently
        raise InputError(f"workload '{name}': importing {path} called sys.exit({err.code!r})") from None
    except Exception as err:
        raise InputError(f"workload '{name}': importing {path} failed: {type(err).__name__}: {err}") from None
    return from_module(name, module)


def from_module(name: str, module: ModuleType) -> Workload:
    missing = [attr for attr in ("Params", "run", "METRIC") if not hasattr(module, attr)]
    if missing:
        raise InputError(
            f"workload '{name}' ({module.__name__}) does not define {', '.join(missing)}: a workload "
            "module needs Params (a pydantic model), run(params, ctx) and METRIC (its main metric)"
        )
    params = module.Params
    if not (isinstance(params, type) and issubclass(params, pydantic.BaseModel)):
        raise InputError(f"workload '{name}': Params must be a pydantic BaseModel subclass, got {params!r}")
    mode = getattr(module, "MODE", "min")
    if mode not in ("min", "max"):
        raise InputError(f"workload '{name}': MODE must be 'min' or 'max', got {mode!r}")
    declared = tuple(str(m) for m in getattr(module, "METRICS", ()))
    packages = getattr(module, "PACKAGES", ())
    if not (isinstance(packages, tuple | list) and all(isinstance(p, str) for p in packages)):
        raise InputError(f"workload '{name}': PACKAGES must list distribution names, got {packages!r}")
    return Workload(
        name,
        module.__name__,
        params,
        str(module.METRIC),
        mode,
        module.run,
        source_root(module),
        metrics=declared,
        chance=_chance(name, getattr(module, "CHANCE", {})),
        packages=tuple(packages),
    )


def _chance(name: str, declared: Any) -> tuple[tuple[str, float], ...]:
    if not isinstance(declared, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and math.isfinite(v) for k, v in declared.items()
    ):
        raise InputError(f"workload '{name}': CHANCE must map metric names to finite numbers, got {declared!r}")
    return tuple((k, float(v)) for k, v in sorted(declared.items()))


def source_root(module: ModuleType) -> Path | None:
    """The tree that holds a module's code as its author edits it: its top-level package's directory, or,
    for a plain module, the directory it sits in. None for installed code (its version is recorded)."""
    top = sys.modules.get(module.__name__.split(".")[0], module)
    paths = list(getattr(top, "__path__", []))
    where = Path(paths[0]) if paths else Path(top.__file__ or "").parent
    if any(part in ("site-packages", "dist-packages") for part in where.resolve().parts):
        return None
    return where.resolve()


def command(argv: list[str], metric: str, mode: str) -> Workload:
    """A ``command:`` spec's workload: ``argv`` run by the worker (``job/command.py``) in a snapshot of the
    directory orch was started from."""
    return Workload(COMMAND, "", CommandParams, metric, mode, None, Path(os.getcwd()).resolve(), tuple(argv))


def for_spec(spec: Any) -> Workload:
    """The workload of a validated Spec (a Python workload, or its command)."""
    if spec.command:
        return command(spec.command, spec.metric.name, spec.metric.mode)
    return get(spec.workload)


def for_job(run: dict[str, Any], job: RunJob) -> Workload:
    """The workload of a run directory's ``run.json`` (inside the job)."""
    if run.get("command"):
        return command(run["command"], job.metric, job.mode)
    # the module resolved at submit: an entry point or the cwd of the submission may not exist where the job runs
    module = job.module
    return (
        from_module(run["workload"], importlib.import_module(module)) if module else get(run["workload"], probe=False)
    )
