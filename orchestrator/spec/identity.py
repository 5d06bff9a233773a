"""What makes two runs the same run: the params that can change a result, as a delta from the workload's
defaults (key scheme 2, docs/architecture.md "Run identity").

- Stable under additions: a param at its default is left out of the identity, so a field added to a
  workload's ``Params`` with a default keeps every existing key and group (Dora's signature idea).
- Honest under changes: what the delta leaves out is recorded on each run (``orch.defaults``: the defaulted
  params and their values). A run recorded under another default keeps its key; submit, status and
  compare name the field and both values (``drift``).
- Execution settings are not identity: a ``Params`` field marked ``json_schema_extra={"identity": False}``
  (threads, devices, caches, intervals) or a path in the spec's ``identity_exclude`` (a command's params).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Set as AbstractSet
from functools import cache
from typing import Any

import pydantic
import pydantic_core

from orchestrator.spec.spec import flatten

KEY_SCHEME = 2  # scheme 1 hashed every resolved param; its stores are adopted (orchestrator/rekey.py)
MAX_DEFAULTS_TAG = 6000  # characters: an MLflow tag holds 8000; past it the tag keeps a digest only
NOT_IDENTITY = "identity"  # the json_schema_extra key a workload sets to False


def _model_of(annotation: Any) -> type[pydantic.BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel) else None


@cache  # per Params class: expand() asks for every variant and grid point
def excluded_paths(model: type[pydantic.BaseModel], prefix: str = "") -> frozenset[str]:
    """Dotted paths of the fields marked ``{"identity": False}``, nested models included."""
    paths: set[str] = set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get(NOT_IDENTITY) is False:
            paths.add(prefix + name)
        elif (nested := _model_of(info.annotation)) is not None:
            paths |= excluded_paths(nested, f"{prefix}{name}.")
    return frozenset(paths)


@cache
def flat_defaults(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """Every field's default as a flat ``{dotted path: JSON value}`` (required fields have none). Cached:
    read only."""
    out: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if not info.is_required():
            value = pydantic_core.to_jsonable_python(info.get_default(call_default_factory=True))
            out.update(flatten({name: value}))
    return out


def _excluded(path: str, excluded: AbstractSet[str]) -> bool:
    return any(path == e or path.startswith(e + ".") for e in excluded)


def split(
    params: dict[str, Any], model: type[pydantic.BaseModel], exclude: list[str] | tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(identity, defaulted): the resolved params' flat paths that differ from the defaults, and those at
    their default; execution settings (marked, or in ``exclude``) are in neither."""
    excluded = excluded_paths(model) | set(exclude)
    defaults = flat_defaults(model)
    identity, defaulted = {}, {}
    for path, value in flatten(params).items():
        if _excluded(path, excluded):
            continue
        if path in defaults and _same(defaults[path], value):
            defaulted[path] = value
        else:
            identity[path] = value
    return identity, defaulted


def _same(a: Any, b: Any) -> bool:
    """One value: 1 and 1.0 are, True and 1 are not (JSON equality beyond numbers)."""
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b)):
        return bool(a == b)
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def defaults_tag(defaulted: dict[str, Any]) -> str:
    """``orch.defaults``: what a run's key leaves out, so that a later change of a default is seen."""
    text = json.dumps(defaulted, sort_keys=True, separators=(",", ":"), default=str)
    if len(text) > MAX_DEFAULTS_TAG:
        return json.dumps({"digest": hashlib.sha256(text.encode()).hexdigest()[:16]})
    return text


def read_defaults_tag(text: str | None) -> dict[str, Any] | None:
    """The tag back (None: a run recorded before key scheme 2, or a tag that is not ours)."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def drift(recorded: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Params a run left at a default that is not the default now: path -> (then, now). A field added
    since (not in ``recorded``) is not a drift: the run ran without it, which its default reproduces."""
    if "digest" in recorded or "digest" in current:
        same = recorded.get("digest") == current.get("digest")
        return {} if same else {"(defaults)": ("another set", "this set")}
    return {
        path: (then, current[path])
        for path, then in recorded.items()
        if path in current and not _same(then, current[path])
    }


def describe_drift(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(
        f"{path} = {json.dumps(then)} (default now {json.dumps(now)})" for path, (then, now) in sorted(changes.items())
    )
