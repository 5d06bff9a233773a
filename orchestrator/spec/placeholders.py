"""``{name}`` placeholders in a ``command:`` spec: ``[python, train.py, --lr, "{lr}", --seed, "{seed}"]``.

Each argument is substituted on its own (never through a shell, so a value cannot inject anything):
``{seed}`` is the run's seed, ``{a.b}`` the resolved param ``a.b``; ``{{`` and ``}}`` are literal braces.
Strings go in as they are, every other value as JSON (``0.001``, ``true``, ``[1, 2]``)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError, did_you_mean

PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_.]*)\}")


def names(arg: str) -> list[str]:
    return [m.group(1) for m in PLACEHOLDER.finditer(arg) if m.group(1)]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def substitute(argv: list[str], flat_params: dict[str, Any], seed: int) -> list[str]:
    values = {**flat_params, "seed": seed}

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name not in values:
            raise KeyError(name)
        return _text(values[name])

    return [PLACEHOLDER.sub(one, arg) for arg in argv]


PYTHONS = ("python", "python3")  # the interpreter orch itself runs on (job/command.py)


def executable_problem(program: str, local: bool) -> str | None:
    """Why ``program`` cannot start where the runs will start, when that can be known here: a path (relative
    to the submit directory, which the code snapshot mirrors) anywhere; a bare name looked up on PATH when
    the runs execute on this machine (a cluster's nodes may have what this login node lacks)."""
    if program in PYTHONS or names(program):
        return None
    if "/" in program:
        path = Path(program)
        if not path.exists():
            return f"no such file: {program}"
        if path.is_dir():
            return f"{program} is a directory, not a program"
        if not os.access(path, os.X_OK):
            return f"{program} is not executable (chmod +x {program}, or run it through its interpreter)"
    elif local and shutil.which(program) is None:
        return f"'{program}' is not found on PATH"
    return None


def check_command(spec: Any, source: str) -> None:
    """The program can start (``executable_problem``), and every placeholder names the seed or a param that
    every variant and grid point defines."""
    problem = executable_problem(spec.command[0], spec.backend == "local") if spec.command else None
    if problem:
        raise InputError(problem, source, "command[0]")
    from orchestrator.spec.spec import deep_merge, flatten, nest

    base = nest(spec.params)
    resolved = [flatten(deep_merge(base, nest(overrides))) for overrides in (spec.variants or {"": {}}).values()]
    for i, arg in enumerate(spec.command):
        for name in names(arg):
            if name == "seed" or name in spec.grid:
                continue
            for params in resolved:
                if name not in params:
                    raise InputError(
                        f"placeholder '{{{name}}}' names no param{did_you_mean(name, params)}; "
                        f"expected '{{seed}}' or one of: {', '.join(params) or '(no params)'}",
                        source,
                        f"command[{i}]",
                    )
