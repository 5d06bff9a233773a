"""Which seed runs `orch compare` puts together: the experiment's group parents (filtered by ``--where``), and
their names, one configuration per group by default or pooled by ``--by`` fields (said so in a note)."""

from __future__ import annotations

from collections import Counter

from orchestrator.analysis.store import runs_with_params
from orchestrator.errors import InputError, did_you_mean
from orchestrator.tracking.ledger import Ledger
from orchestrator.tracking.records import Role, Tag


def _field_value(run, name: str) -> str | None:
    """``variant``, ``grid``, ``params.X``, ``tags.X``, or a bare param/tag name (param first)."""
    params, tags = run.data.params, run.data.tags
    if name == "variant":
        return tags.get(Tag.VARIANT)
    if name in ("grid", "grid_point"):
        return tags.get(Tag.GRID_POINT) or "-"
    if name.startswith("params."):
        return params.get(name[len("params.") :])
    if name.startswith("tags."):
        return tags.get(name[len("tags.") :])
    for source in (params, tags):
        if name in source:
            return source[name]
    return tags.get(f"orch.{name}")


def _short(name: str) -> str:
    return name.split(".", 1)[1] if name.startswith(("params.", "tags.")) else name


def _differing_params(parents: list) -> list[str]:
    """The params whose values differ among these parent runs (each a configuration)."""
    keys = sorted({k for p in parents for k in p.data.params})
    return [k for k in keys if len({p.data.params.get(k) for p in parents}) > 1]


def group_names(parents: list, by: list[str]) -> dict[str, str]:
    """parent run id -> group name. Without ``by`` a group is one configuration (``orch.group``), named by
    its label (variant[grid point]); configurations that share a label (the same variant submitted with
    other ``--set`` values) are told apart by the params that differ between them. With ``by``, parents
    that agree on those fields are pooled (``pooling_notes`` says so)."""
    if not by:
        labels = {p.info.run_id: p.data.tags.get("mlflow.runName") or p.data.tags.get(Tag.GROUP, "?") for p in parents}
        names = dict(labels)
        for label in [v for v, n in Counter(labels.values()).items() if n > 1]:
            same = [p for p in parents if labels[p.info.run_id] == label]
            keys = _differing_params(same)
            for p in same:
                detail = ", ".join(f"{k}={p.data.params.get(k)}" for k in keys) or p.data.tags.get(Tag.GROUP, "?")
                names[p.info.run_id] = f"{label} ({detail})"
        return names
    for name in by:
        if all(_field_value(p, name) is None for p in parents):
            known = sorted({f"params.{k}" for p in parents for k in p.data.params} | {"variant", "grid"})
            raise InputError(
                f"unknown grouping field '{name}'{did_you_mean(name, known)}; known: {', '.join(known)}", "--by"
            )
    names = {}
    for p in parents:
        parts = [f"{_field_value(p, n)}" if n == "variant" else f"{_short(n)}={_field_value(p, n)}" for n in by]
        names[p.info.run_id] = ", ".join(parts)
    return names


def pooling_notes(parents: list, names: dict[str, str]) -> list[str]:
    """One note per group that pools configurations differing in more than seeds."""
    notes = []
    for name in dict.fromkeys(names.values()):
        pooled = [p for p in parents if names[p.info.run_id] == name]
        keys = _differing_params(pooled)
        if len(pooled) > 1 and keys:
            notes.append(
                f"`{name}` pools {len(pooled)} configurations that differ in {', '.join(keys)} "
                "(asked for by --by): its spread mixes those settings with seed noise"
            )
    return notes


def group_parents(ledger: Ledger, experiment_id: str, where: str | None = None) -> list:
    """The experiment's group runs (with params; on sqlite read without MLflow: ``store``), those matching
    ``where`` (``analysis/where.py``) when given; none is an error that says what there is instead."""
    parents = runs_with_params(ledger, experiment_id, Role.GROUP)
    if parents and where:
        from orchestrator.analysis.where import matches, parse

        clauses = parse(where)
        parents = [p for p in parents if matches(p, clauses)]
        if not parents:
            raise InputError(f"no group matches '{where}'", "--where")
    if not parents:
        if ledger.runs(experiment_id, role=Role.SWEEP):
            raise InputError(
                "the experiment holds only `orch tune` sweeps (compared in its trial table): compare "
                "seeds of `orch submit`, e.g. orch submit best.yaml --seeds 10"
            )
        raise InputError("the experiment has no orch runs (no parent run with tag orch.role=group)")
    return parents
